"""Rate-limit storage (adapter): Flask-Limiter's Redis storage, counting in one round trip.

With the fixed-window strategy, Flask-Limiter makes three Redis round trips per API request:
the hit (an INCRBY + EXPIRE script), then, for the ``X-RateLimit-*`` headers, a GET of the
counter and a TTL of its key. Here the hit's script returns the count and the TTL together; the
GET and the TTL that the same thread asks for right after, for the same key, are answered from
them. So a request costs one round trip, and the headers show the window as this request's hit
left it. Anything else (another key, another thread, more than ``FRESH`` seconds later) reads
Redis as before; errors are the ``redis`` ones, so Flask-Limiter's in-memory fallback works as
it does with its own storage.

``create_app`` selects it through the storage URI (``dispatched+redis://…``, see
``limiter_storage_uri``); importing this module registers the scheme with ``limits``.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from limits.storage import RedisStorage

#: How long the counted value stands in for a read (a request's hit → its response headers).
FRESH = 1.0
PREFIX = "dispatched+"


class CountingRedisStorage(RedisStorage):
    """``RedisStorage`` whose ``incr`` also learns the window's expiry (see the module)."""

    STORAGE_SCHEME = [PREFIX + scheme for scheme in ("redis", "rediss", "redis+unix")]

    SCRIPT_INCR_EXPIRE_TTL = """
    local amount = tonumber(ARGV[2])
    local current = redis.call("incrby", KEYS[1], amount)
    if tonumber(current) == amount then
        redis.call("expire", KEYS[1], ARGV[1])
    end
    return {current, redis.call("ttl", KEYS[1])}
    """

    def __init__(self, uri: str, **options: Any) -> None:
        self._seen = threading.local()
        super().__init__(uri.removeprefix(PREFIX), **options)

    def initialize_storage(self, uri: str) -> None:
        super().initialize_storage(uri)
        self.lua_incr_expire_ttl = self.get_connection().register_script(
            self.SCRIPT_INCR_EXPIRE_TTL
        )

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        key = self.prefixed_key(key)
        current, ttl = self.lua_incr_expire_ttl([key], [expiry, amount])
        self._seen.last = (key, int(current), max(int(ttl), 0) + time.time(), time.monotonic())
        return int(current)

    def get(self, key: str) -> int:
        seen = self._fresh(key)
        return seen[1] if seen is not None else super().get(key)

    def get_expiry(self, key: str) -> float:
        seen = self._fresh(key)
        if seen is None:
            return super().get_expiry(key)
        self._seen.last = None  # the headers read the window once; later reads go to Redis
        return seen[2]

    def _fresh(self, key: str) -> tuple[str, int, float, float] | None:
        seen = getattr(self._seen, "last", None)
        if seen is None or seen[0] != self.prefixed_key(key):
            return None
        return seen if time.monotonic() - seen[3] < FRESH else None
