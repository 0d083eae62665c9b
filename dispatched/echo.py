"""The built-in echo receiver (development only): a webhook that answers 200 and keeps the
last deliveries, so a first job completes end to end with no setup."""

from __future__ import annotations

import json
import time
from typing import Any

from flask import Blueprint, request
from redis.exceptions import RedisError

from . import scheduling

bp = Blueprint("echo", __name__, url_prefix="/dev")
KEY = "dispatched:echo"
KEEP = 50


@bp.post("/echo")
def receive() -> tuple[dict[str, Any], int]:
    entry = {
        "receivedAt": time.time(),
        "headers": {k: v for k, v in request.headers.items() if k.lower() != "authorization"},
        "hasBearer": request.headers.get("Authorization", "").startswith("Bearer "),
        "body": request.get_data(as_text=True)[:10_000],
    }
    try:
        pipe = scheduling.connection().pipeline()
        pipe.lpush(KEY, json.dumps(entry)).ltrim(KEY, 0, KEEP - 1).execute()
    except RedisError:
        return {"received": False}, 503
    return {"received": True}, 200


@bp.get("/echo")
def recent() -> dict[str, Any]:
    """The last deliveries, newest first."""
    return {"deliveries": recent_deliveries()}


def recent_deliveries() -> list[dict[str, Any]]:
    return [json.loads(x) for x in scheduling.connection().lrange(KEY, 0, KEEP - 1)]
