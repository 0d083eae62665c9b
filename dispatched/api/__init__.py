"""The JSON API blueprint (``/api``, DESIGN.md §5)."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("api", __name__, url_prefix="/api")

from . import auth, jobs, openapi, project, schedules, usage  # noqa: E402,F401  (routes register)
