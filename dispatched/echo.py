"""The built-in echo receiver (development only): a webhook that answers 200 and keeps each
project's last deliveries, so a first job completes end to end with no setup. Its deliveries
show on that project's webhook page (logged in, tenant-scoped); there is no public reader."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from . import echo_store

bp = Blueprint("echo", __name__, url_prefix="/dev")


@bp.post("/echo/<int:project_id>")
def receive(project_id: int) -> tuple[dict[str, Any], int]:
    kept = echo_store.record(project_id, request.headers.items(), request.get_data(as_text=True))
    return ({"received": True}, 200) if kept else ({"received": False}, 503)
