"""Operations endpoints: liveness, readiness (DB + Redis), Prometheus metrics."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response

from . import health, metrics

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> dict[str, Any]:
    """The process is up (no dependency is checked)."""
    return {"status": "ok"}


@bp.get("/readyz")
def readyz() -> dict[str, Any]:
    """Ready to serve: the database and Redis both answer (else 503 SERVICE_UNAVAILABLE)."""
    return {"status": "ready", "checks": health.check_ready()}


@bp.get("/metrics")
def prometheus_metrics() -> Response:
    """Prometheus text exposition (counters shared by all processes through Redis)."""
    return Response(metrics.render(), mimetype="text/plain; version=0.0.4")
