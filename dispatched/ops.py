"""Operations endpoints: liveness, readiness (DB + Redis), Prometheus metrics.

``/metrics`` is open unless ``METRICS_TOKEN`` is set; then it needs
``Authorization: Bearer <METRICS_TOKEN>`` (compared in constant time) and answers anything else
with the API's 401 body.
"""

from __future__ import annotations

import hmac
from typing import Any

from flask import Blueprint, Response, current_app, request

from . import health, metrics
from .errors import ERROR_CODES, error_response

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
    if not _metrics_authorized():
        response = error_response("UNAUTHORIZED", ERROR_CODES["UNAUTHORIZED"], "Unauthorized")
        response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return Response(metrics.render(), mimetype="text/plain; version=0.0.4")


def _metrics_authorized() -> bool:
    """Whether the request may read the metrics: always when METRICS_TOKEN is unset."""
    token = current_app.config["METRICS_TOKEN"]
    if not token:
        return True
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    expected = token.encode("utf-8")
    # compare_digest on bytes: constant time in the token's content, whatever the input.
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode("utf-8"), expected
    )
