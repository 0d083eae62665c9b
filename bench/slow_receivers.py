"""Benchmark 3 (issue 9 row 2): a receiver that takes 200 ms per request, 16 / 64 / 256 in flight.

    .venv/bin/python bench/slow_receivers.py --db postgres --inflight 16,64,256

For each in-flight level F: ``worker.py`` runs WORKER_CONCURRENCY=P processes (2, the default
install) with DELIVERY_CONCURRENCY=F/P threads each. N = 25 x F jobs (5 s of work at the ideal
rate) are dispatched through the API first, with no worker and no scheduler running, split
over two projects (two scale-plan teams: one project's plan cap is 250 in flight, below 256);
then the workers and ``scheduler.py`` start and the receiver counts deliveries.
Rate = (N - 1) / (last - first delivery); ideal = F / 0.2 s. Target: rate >= 0.9 x ideal.

Memory: RSS, PSS and USS of the worker pool's processes (the pool parent included), once idle
(engines started, nothing released yet) and once while delivering (half the jobs done).
Target: total worker RSS at 256 in flight <= 400 MiB; per in-flight delivery <= 1 MiB above
the process baseline ((busy - idle) / F).

``--workers 4,16,64`` runs the model measured before issue 9 instead: W processes of
``DELIVERY_CONCURRENCY`` 8 (the engine's smallest workable size: a worker takes a hand-over
only when 8 attempts fit), so F = 8 x W.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    ReceiverClient,
    common_args,
    cpu_report,
    cpu_snapshot,
    create_team,
    log,
    processes,
    reset,
    start_scheduler,
    start_web,
    start_workers,
    tree_memory,
    wait_workers,
)
from bench.delivery_throughput import dispatch_backlog  # noqa: E402
from bench.engine_throughput import rates  # noqa: E402

DELAY = 0.2


def total(mem: list[dict[str, float]], field: str) -> float:
    return sum(m[field] for m in mem)


def main() -> None:
    parser = common_args(__doc__ or "")
    parser.add_argument("--inflight", default="16,64,256")
    parser.add_argument("-p", "--processes", type=int, default=2, help="WORKER_CONCURRENCY")
    parser.add_argument("--workers", default=None, help="old model: W processes x 8 threads")
    parser.add_argument("--per-inflight", type=int, default=25, help="jobs per in-flight slot")
    parser.add_argument("--projects", type=int, default=2)
    args = parser.parse_args()
    if args.workers:
        levels = [(int(w), 8) for w in args.workers.split(",")]
    else:
        levels = [(args.processes, int(f) // args.processes) for f in args.inflight.split(",")]
    log(
        f"== slow receivers ({DELAY * 1000:.0f} ms/request), db={args.db}, "
        f"levels (processes x threads) {levels}, {args.projects} projects"
    )
    ratios = {}
    rss_at: dict[int, float] = {}
    with processes() as procs:
        env = reset(args.db)
        receiver = ReceiverClient(procs, delay=DELAY)
        teams = [
            create_team(env, receiver.url("/hook"), name=f"Slow {i}") for i in range(args.projects)
        ]
        base = start_web(procs, env)
        for p, c in levels:
            f = p * c
            n = args.per_inflight * f
            receiver.reset()
            secs = 0.0
            for i, team in enumerate(teams):
                share = n // len(teams) + (1 if i < n % len(teams) else 0)
                secs += dispatch_backlog(base, team["apiKey"], share)
            name = f"worker{f}"
            start_workers(procs, env, p, name=name, delivery_concurrency=c)
            wait_workers("dispatched", p)
            time.sleep(1.5)
            idle = tree_memory(procs.pid(name), include_root=True)
            started = time.time()
            start_scheduler(procs, env)
            cpu0 = cpu_snapshot(procs)
            busy: list = []
            peak: list = []

            def sample(
                target: int = n // 2, busy: list = busy, name: str = name, peak: list = peak
            ) -> None:
                receiver.wait_count(target, 120)
                peak.append(receiver.stats()["in_flight"])
                busy.extend(tree_memory(procs.pid(name), include_root=True))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            receiver.wait_count(n, 200)
            cpu = cpu_report(cpu0, cpu_snapshot(procs), time.time() - started)
            sampler.join(10)
            stats = receiver.stats()
            res = rates(receiver, n, started)
            procs.stop("scheduler")
            procs.stop(name)
            ideal = f / DELAY
            ratios[f] = res["rate"] / ideal
            rss_at[f] = total(busy, "rss")
            grow = (total(busy, "uss") - total(idle, "uss")) / f if busy else float("nan")
            log(
                f"  {p} x {c:3d} = {f:3d} in flight: N={n} (dispatched in {secs:.1f}s)  "
                f"{res['rate']:7.1f} deliveries/s  ideal {ideal:5.0f}/s  ratio {ratios[f]:.3f}"
                f"{'' if res['complete'] else ' INCOMPLETE'}  receiver max in flight "
                f"{stats['max_in_flight']} (at half-way {peak[0] if peak else '?'})"
            )
            log(
                f"      worker pool ({len(busy)} processes) while delivering: RSS "
                f"{total(busy, 'rss'):.0f} MiB, PSS {total(busy, 'pss'):.0f} MiB, USS "
                f"{total(busy, 'uss'):.0f} MiB; idle: RSS {total(idle, 'rss'):.0f}, USS "
                f"{total(idle, 'uss'):.0f} MiB -> {grow * 1024:.0f} KiB USS per in-flight "
                f"delivery; threads {sum(m['threads'] for m in busy):.0f}"
            )
            log(f"      {cpu}")
    log(
        "RATIO measured/ideal deliveries/s ["
        + args.db
        + "] = "
        + ", ".join(f"{f} in flight: {r:.3f}" for f, r in ratios.items())
        + "  (target >= 0.9); worker RSS "
        + ", ".join(f"{f}: {rss:.0f} MiB" for f, rss in rss_at.items())
        + " (target <= 400 MiB at 256)"
    )


if __name__ == "__main__":
    main()
