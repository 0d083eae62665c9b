"""The app's Redis connection (adapter): one raw (bytes) client per process, built lazily.

The raw ``REDIS_URL`` is kept in the config for RQ and the rate limiter; this module only
decodes it into a client. Nothing connects at import or at ``init_app`` time.
"""

from __future__ import annotations

from flask import Flask, current_app
from redis import Redis

EXTENSION_KEY = "dispatched.redis"


def init_app(app: Flask) -> None:
    """Create the app's Redis client from ``REDIS_URL`` (no I/O happens here)."""
    app.extensions[EXTENSION_KEY] = from_url(app.config["REDIS_URL"])


def from_url(url: str) -> Redis:
    """Return a raw (bytes) Redis client with short timeouts, as RQ needs."""
    return Redis.from_url(
        url,
        socket_connect_timeout=1,
        socket_timeout=5,
        health_check_interval=30,
        retry_on_timeout=False,
    )


def connection() -> Redis:
    """Return the current app's Redis client."""
    return current_app.extensions[EXTENSION_KEY]
