"""The built-in echo receiver's log (development only): each project's last deliveries.

Kept in Redis; callers never see a Redis error: a delivery that cannot be kept says so, an
unreadable log reads as empty.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from flask import current_app
from redis.exceptions import RedisError

from . import redis_client
from .models import Project

KEEP = 50
#: Where the echo blueprint receives a project's deliveries.
PATH = "/dev/echo/{project_id}"


def _key(project_id: int) -> str:
    return f"dispatched:echo:{project_id}"


def url_for_project(public_url: str, project_id: int) -> str:
    """Return the echo receiver's URL for the project on the app at ``public_url``."""
    return public_url.rstrip("/") + PATH.format(project_id=project_id)


def record(project_id: int, headers: Iterable[tuple[str, str]], body: str) -> bool:
    """Keep a delivery as the project's newest; return False if Redis could not keep it.

    The Authorization header is not kept, only whether it carried a Bearer token.
    """
    headers = list(headers)
    authorization = next((v for k, v in headers if k.lower() == "authorization"), "")
    entry = {
        "receivedAt": time.time(),
        "headers": {k: v for k, v in headers if k.lower() != "authorization"},
        "hasBearer": authorization.startswith("Bearer "),
        "body": body[:10_000],
    }
    try:
        pipe = redis_client.connection().pipeline()
        pipe.lpush(_key(project_id), json.dumps(entry)).ltrim(_key(project_id), 0, KEEP - 1)
        pipe.execute()
    except RedisError:
        return False
    return True


def recent(project_id: int, limit: int = 10) -> list[dict[str, Any]]:
    """Return the project's last deliveries, newest first ([] when Redis is unreachable)."""
    try:
        raw = redis_client.connection().lrange(_key(project_id), 0, limit - 1)
    except RedisError:
        return []
    return [json.loads(item) for item in raw]


def shown_for(project: Project) -> list[dict[str, Any]]:
    """Return the deliveries the webhook page shows: recent ones if the webhook is the echo."""
    if not current_app.config["ECHO_RECEIVER_ENABLED"] or not project.webhook_url:
        return []
    if not project.webhook_url.rstrip("/").endswith(PATH.format(project_id=project.id)):
        return []
    return recent(project.id)
