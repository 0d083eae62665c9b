"""Diagnostic (not a benchmark): wall and CPU time per request in-process (Flask test client,
one thread, no gunicorn, no contention), then a cProfile of 300 immediate dispatches.

    .venv/bin/python bench/cpu_per_request.py --db postgres
"""

from __future__ import annotations

import cProfile
import os
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import common_args, create_team, log, reset  # noqa: E402


def main() -> None:
    args = common_args(__doc__ or "").parse_args()
    env = reset(args.db)
    team = create_team(env, "http://127.0.0.1:9/hook")
    os.environ.update(env)
    from dispatched import create_app

    client = create_app().test_client()
    headers = {"Authorization": "Bearer " + team["apiKey"]}
    bodies = {
        "dispatch (now)": {"payload": {"i": 1}},
        "dispatch (scheduled)": {"payload": {"i": 1}, "scheduleFor": "2027-06-01T00:00:00Z"},
    }

    def run(n: int, kind: str) -> tuple[float, float]:
        t0, p0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            if kind == "healthz":
                client.get("/healthz")
            else:
                r = client.post("/api/jobs/dispatch", json=bodies[kind], headers=headers)
                assert r.status_code == 201, r.data
        return (time.perf_counter() - t0) / n * 1000, (time.process_time() - p0) / n * 1000

    run(100, "dispatch (now)")
    run(300, "healthz")
    for kind in ("healthz", *bodies):
        wall, cpu = run(500, kind)
        log(f"{kind:22s} wall {wall:.2f} ms  CPU {cpu:.2f} ms per request")
    profile = cProfile.Profile()
    profile.enable()
    run(300, "dispatch (now)")
    profile.disable()
    stats = pstats.Stats(profile)
    stats.sort_stats("cumulative").print_stats(
        r"dispatched/|limiter/_|pool/base.py.*(connect|ping)"
    )


if __name__ == "__main__":
    main()
