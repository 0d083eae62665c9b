"""Diagnostic (not a benchmark): during 8 s of dispatch load (16 threads) on gunicorn 2x8 with
PostgreSQL, sample pg_stat_activity wait events and the CPU of the gunicorn workers.

    .venv/bin/python bench/dispatch_locks.py
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil  # noqa: E402
import psycopg  # noqa: E402

from bench.common import (  # noqa: E402
    PG_DB,
    PG_URL,
    create_team,
    dispatch_spec,
    log,
    processes,
    reset,
    run_load,
    start_web,
)

WAITS = (
    "SELECT coalesce(wait_event_type, '-'), coalesce(wait_event, '-'), state "
    f"FROM pg_stat_activity WHERE datname = '{PG_DB}' AND pid <> pg_backend_pid()"
)


def main() -> None:
    env = reset("postgres")
    with processes() as procs:
        team = create_team(env, "http://127.0.0.1:9/hook")
        base = start_web(procs, env)
        spec = dispatch_spec(base, team["apiKey"], threads=16, duration=8)
        kids = psutil.Process(procs.pid("web")).children()
        res: dict = {}
        thread = threading.Thread(target=lambda: res.update(run_load(spec)))
        thread.start()
        time.sleep(2)
        cpu0 = {k.pid: k.cpu_times() for k in kids}
        idle0, wall0 = psutil.cpu_times().idle, time.time()
        waits: dict[tuple, int] = {}
        samples = 40
        with psycopg.connect(PG_URL.replace("+psycopg", ""), autocommit=True) as pg:
            for _ in range(samples):
                for row in pg.execute(WAITS):
                    waits[row] = waits.get(row, 0) + 1
                time.sleep(0.1)
        cpu1 = {k.pid: k.cpu_times() for k in kids}
        dt = time.time() - wall0
        idle = (psutil.cpu_times().idle - idle0) / dt
        thread.join()
    for pid, t0 in cpu0.items():
        t1 = cpu1[pid]
        used = (t1.user + t1.system - t0.user - t0.system) / dt
        log(f"gunicorn worker {pid}: {100 * used:.0f}% CPU")
    log(f"machine idle: {idle:.2f} cores; dispatch {res['rps']:.1f} req/s")
    log("mean backends per (wait_event_type, wait_event, state):")
    for key, count in sorted(waits.items(), key=lambda kv: -kv[1])[:10]:
        log(f"  {count / samples:5.2f}  {key}")


if __name__ == "__main__":
    main()
