"""The HTMX dashboard blueprint (``/``, DESIGN.md §7): server-rendered pages, htmx partials."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("dashboard", __name__)

# Routes register on import.
from . import (  # noqa: E402,F401
    account,
    auth,
    doctor,
    endpoint,
    jobs,
    pages,
    schedules,
    settings,
    team,
)
