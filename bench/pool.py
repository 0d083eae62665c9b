"""Run an RQ WorkerPool of any worker class: the launcher of the benchmarks' comparison pools.

    python bench/pool.py --class bench.bare_task.BareWorker --queue bench-bare -n 4
    python bench/pool.py --class bench.fork_worker.ForkDeliveryWorker --queue dispatched -n 4

It mirrors ``worker.py`` (same WorkerPool, same Redis connection settings) so that only the
worker class differs between a benchmark and its baseline. Reads REDIS_URL and LOG_LEVEL.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rq.worker_pool import WorkerPool  # noqa: E402

from dispatched import redis_client  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--class", dest="worker_class", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("-n", type=int, default=4)
    args = parser.parse_args()
    module, _, name = args.worker_class.rpartition(".")
    worker_class = getattr(importlib.import_module(module), name)
    level = os.environ.get("LOG_LEVEL", "INFO")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    connection = redis_client.from_url(os.environ["REDIS_URL"])
    pool = WorkerPool(
        [args.queue], connection=connection, num_workers=args.n, worker_class=worker_class
    )
    pool.start(burst=False, logging_level=level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
