"""Delivery workers: ``python worker.py`` starts WORKER_CONCURRENCY worker processes (default
2), each keeping up to DELIVERY_CONCURRENCY deliveries in flight (default 64) on its engine's
threads. SIGTERM/SIGINT: stop taking work, let the deliveries in flight finish, exit.
"""

from __future__ import annotations

import logging
import sys

from rq.worker_pool import WorkerPool

from dispatched import create_app, redis_client
from dispatched.rq_worker import DeliveryWorker


def main() -> int:
    app = create_app()
    # The pool's parent only needs Redis; each child builds its own app (no shared DB pool).
    connection = redis_client.from_url(app.config["REDIS_URL"])
    queue = app.config["DELIVERY_QUEUE"]
    count = app.config["WORKER_CONCURRENCY"]
    logging.getLogger(__name__).info(
        "starting %d delivery worker processes on queue %r, %d deliveries in flight each",
        count,
        queue,
        app.config["DELIVERY_CONCURRENCY"],
    )
    if count <= 1:
        DeliveryWorker([queue], connection=connection).work(logging_level=app.config["LOG_LEVEL"])
        return 0
    pool = WorkerPool(
        [queue], connection=connection, num_workers=count, worker_class=DeliveryWorker
    )
    pool.start(burst=False, logging_level=app.config["LOG_LEVEL"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
