"""The built-in echo receiver (development only): a webhook that answers 200 and keeps each
project's last deliveries, so a first job completes end to end with no setup. Its deliveries
show on that project's webhook page (logged in, tenant-scoped); there is no public reader."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, request
from redis.exceptions import RedisError

from . import echo_store

bp = Blueprint("echo", __name__, url_prefix="/dev")


@bp.post("/echo/<int:project_id>")
def receive(project_id: int) -> tuple[dict[str, Any], int]:
    entry = {
        "receivedAt": time.time(),
        "headers": {k: v for k, v in request.headers.items() if k.lower() != "authorization"},
        "hasBearer": request.headers.get("Authorization", "").startswith("Bearer "),
        "body": request.get_data(as_text=True)[:10_000],
    }
    try:
        echo_store.record(project_id, entry)
    except RedisError:
        return {"received": False}, 503
    return {"received": True}, 200


def url_for_project(public_url: str, project_id: int) -> str:
    return f"{public_url.rstrip('/')}/dev/echo/{project_id}"
