"""Operations endpoints: liveness, readiness (DB + Redis)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import Blueprint, Response

from . import metrics, transport
from .api.errors import error_response
from .extensions import db

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> dict[str, Any]:
    """The process is up (no dependency is checked)."""
    return {"status": "ok"}


@bp.get("/readyz")
def readyz() -> Any:
    """Ready to serve: the database and Redis both answer."""
    checks: dict[str, str] = {}
    try:
        db.session.execute(sa.text("SELECT 1"))
        checks["database"] = "ok"
    except sa.exc.SQLAlchemyError as exc:
        db.session.rollback()
        checks["database"] = f"unreachable: {type(exc).__name__}: {str(exc).splitlines()[0]}"
    try:
        transport.ping()
        checks["redis"] = "ok"
    except transport.TransportUnavailable as exc:
        checks["redis"] = f"unreachable: {exc}"
    failing = [name for name, state in checks.items() if state != "ok"]
    if failing:
        return error_response(
            "SERVICE_UNAVAILABLE",
            503,
            f"not ready: {', '.join(failing)} unreachable",
            checks=checks,
        )
    return {"status": "ready", "checks": checks}


@bp.get("/metrics")
def prometheus_metrics() -> Response:
    """Prometheus text exposition (counters shared by all processes through Redis)."""
    return Response(metrics.render(), mimetype="text/plain; version=0.0.4")
