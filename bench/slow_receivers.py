"""Benchmark 3: a receiver that takes 200 ms per request; W = 4, 16, 64 delivery workers.

    .venv/bin/python bench/slow_receivers.py --db postgres --workers 4,16,64

For each W: N = 25 x W jobs (5 s of work at the ideal rate) are dispatched with no worker
running, then ``worker.py`` with WORKER_CONCURRENCY=W is started and the receiver counts
deliveries. Rate = (N - 1) / (last - first delivery); ideal = W / 0.2 s. Memory: RSS and
USS (unique set: what the process does not share with its forked siblings) of each worker
process, sampled while it is delivering. Target: rate >= 0.9 x ideal.
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
    create_team,
    log,
    processes,
    reset,
    start_web,
    start_workers,
    tree_memory,
)
from bench.delivery_throughput import dispatch_backlog, measure  # noqa: E402

DELAY = 0.2


def main() -> None:
    parser = common_args(__doc__ or "")
    parser.add_argument("--workers", default="4,16,64")
    parser.add_argument("--per-worker", type=int, default=25, help="jobs per worker")
    args = parser.parse_args()
    counts = [int(x) for x in args.workers.split(",")]
    log(f"== slow receivers ({DELAY * 1000:.0f} ms/request), db={args.db}, W={counts}")
    ratios = {}
    with processes() as procs:
        env = reset(args.db)
        receiver = ReceiverClient(procs, delay=DELAY)
        team = create_team(env, receiver.url("/hook"))
        base = start_web(procs, env)
        for w in counts:
            n = args.per_worker * w
            receiver.reset()
            secs = dispatch_backlog(base, team["apiKey"], n)
            name = f"worker{w}"
            started = time.time()
            start_workers(procs, env, w, name=name)
            mem: list = []

            def sample(name: str = name, target: int = n // 2, mem: list = mem) -> None:
                receiver.wait_count(target, 120)
                mem.extend(tree_memory(procs.pid(name)))

            sampler = threading.Thread(target=sample)
            sampler.start()
            res = measure(receiver, n, started, timeout=200)
            sampler.join()
            procs.stop(name)
            ideal = w / DELAY
            ratios[w] = res["rate"] / ideal
            workers = [m for m in mem if m["rss"] > 20]  # the W workers (+ rq's pool parent)
            rss = sum(m["rss"] for m in workers) / max(len(workers), 1)
            uss = sum(m["uss"] for m in workers) / max(len(workers), 1)
            log(
                f"  W={w:3d}: N={n} (dispatched in {secs:.1f}s)  {res['rate']:6.1f} deliveries/s"
                f"  ideal {ideal:5.0f}/s  ratio {ratios[w]:.3f}"
                f"{'' if res['complete'] else ' INCOMPLETE'}   "
                f"per worker process: RSS {rss:.0f} MiB, USS {uss:.0f} MiB "
                f"({len(workers)} processes, total USS {sum(m['uss'] for m in workers):.0f} MiB)"
            )
    log(
        "RATIO measured/ideal deliveries/s ["
        + args.db
        + "] = "
        + ", ".join(f"W={w}: {r:.3f}" for w, r in ratios.items())
        + "  (target >= 0.9)"
    )


if __name__ == "__main__":
    main()
