"""Worker-class comparison: the same N deliveries by DeliveryWorker (rq.SimpleWorker, what
``worker.py`` runs) and by a fork-per-job variant (``bench.fork_worker.ForkDeliveryWorker``,
an ``rq.Worker`` subclass with the same app-context logic), same run, same W.

    .venv/bin/python bench/worker_class.py --db postgres -n 2000 -w 4

Each phase: N jobs dispatched through the API with no worker running, then a WorkerPool of W
workers of the class is started and the receiver counts deliveries until it has all N.
Rate = (N - 1) / (last - first delivery). The fork variant is started with bench/pool.py (the
same WorkerPool code as worker.py). Phases run simple, fork, simple, fork (--repeat) to
spread machine noise.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import common_args, log, processes  # noqa: E402
from bench.delivery_throughput import run_ours, setup, show  # noqa: E402

FORK = "bench.fork_worker.ForkDeliveryWorker"


def main() -> None:
    parser = common_args(__doc__ or "")
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("-w", "--workers", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    log(
        f"== worker class: SimpleWorker vs fork-per-job Worker, db={args.db}, N={args.n}, "
        f"W={args.workers}"
    )
    rates: dict[str, list[float]] = {"simple": [], "fork": []}
    with processes() as procs:
        env, receiver, team, base = setup(procs, args)
        for r in range(args.repeat):
            simple = run_ours(
                procs, env, receiver, base, team["apiKey"], args.n, args.workers, name="simple"
            )
            show(f"DeliveryWorker (SimpleWorker) #{r + 1}", simple)
            fork = run_ours(
                procs,
                env,
                receiver,
                base,
                team["apiKey"],
                args.n,
                args.workers,
                worker_class=FORK,
                name="fork",
            )
            show(f"ForkDeliveryWorker (fork/job) #{r + 1}", fork)
            rates["simple"].append(simple["rate"])
            rates["fork"].append(fork["rate"])
    s = sum(rates["simple"]) / len(rates["simple"])
    f = sum(rates["fork"]) / len(rates["fork"])
    log(f"SimpleWorker {s:.1f}/s, fork-per-job {f:.1f}/s (mean of {args.repeat})")
    log(f"RATIO fork-per-job/SimpleWorker deliveries/s [{args.db}, W={args.workers}] = {f / s:.3f}")


if __name__ == "__main__":
    main()
