"""Storage of the built-in echo receiver (development only): the last deliveries per project."""

from __future__ import annotations

import json
from typing import Any

from redis.exceptions import RedisError

from . import redis_client

KEEP = 50


def _key(project_id: int) -> str:
    return f"dispatched:echo:{project_id}"


def record(project_id: int, entry: dict[str, Any]) -> None:
    """Keep ``entry`` as the newest delivery of the project (raises RedisError)."""
    pipe = redis_client.connection().pipeline()
    pipe.lpush(_key(project_id), json.dumps(entry)).ltrim(_key(project_id), 0, KEEP - 1).execute()


def recent(project_id: int, limit: int = 10) -> list[dict[str, Any]]:
    """The project's last deliveries, newest first ([] when Redis is unreachable)."""
    try:
        raw = redis_client.connection().lrange(_key(project_id), 0, limit - 1)
    except RedisError:
        return []
    return [json.loads(item) for item in raw]
