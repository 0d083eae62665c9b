"""The HTMX dashboard blueprint (``/``, DESIGN.md §7): server-rendered pages, htmx partials."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("dashboard", __name__)

from . import account, auth, doctor, jobs, pages, schedules, settings, team  # noqa: E402,F401  (routes register)
