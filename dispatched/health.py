"""Readiness of this process's dependencies: the database and the transport (Redis)."""

from __future__ import annotations

import sqlalchemy as sa

from . import transport
from .errors import ServiceUnavailable
from .extensions import db


def check_ready() -> dict[str, str]:
    """Return each dependency's state ("ok"); raise ServiceUnavailable naming any that fails."""
    checks = {"database": _database(), "redis": _transport()}
    failing = [name for name, state in checks.items() if state != "ok"]
    if failing:
        raise ServiceUnavailable(f"not ready: {', '.join(failing)} unreachable", checks=checks)
    return checks


def _database() -> str:
    try:
        db.session.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as exc:
        db.session.rollback()
        return f"unreachable: {type(exc).__name__}: {str(exc).splitlines()[0]}"
    return "ok"


def _transport() -> str:
    try:
        transport.ping()
    except transport.TransportUnavailable as exc:
        return f"unreachable: {exc}"
    return "ok"
