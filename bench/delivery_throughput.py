"""Benchmark 2: deliveries/s of ``worker.py`` vs bare RQ jobs that only POST, same run.

    .venv/bin/python bench/delivery_throughput.py --db postgres -n 2000 -w 4

1. N jobs are dispatched through the API (gunicorn 2 workers x 8 threads) with no worker
   running; then ``worker.py`` (WORKER_CONCURRENCY=W: an RQ WorkerPool of DeliveryWorker, a
   SimpleWorker) is started and the receiver counts deliveries until it has all N.
2. Baseline: N bare RQ jobs (``bench.bare_task.post``: one requests.Session POST of a
   delivery-sized body to the same receiver) run by a WorkerPool of W SimpleWorkers
   (``bench/pool.py``, same pool code and Redis settings as worker.py).

The receiver (a separate process, threaded HTTP/1.1, answers 200 at once) timestamps each
request. Rate = (N - 1) / (last - first delivery): steady state, without process start-up
(the wall time from starting the pool, start-up included, is printed too).
Target: ours / baseline >= 0.8.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import bare_task  # noqa: E402
from bench.common import (  # noqa: E402
    ReceiverClient,
    common_args,
    cpu_report,
    cpu_snapshot,
    create_team,
    dispatch_spec,
    log,
    processes,
    profile_children,
    redis_conn,
    reset,
    run_load,
    start_pool,
    start_web,
    start_workers,
    tree_memory,
)
from bench.profile_summary import summarize as profile_summary  # noqa: E402

BARE_QUEUE = "bench-bare"


def dispatch_backlog(base: str, key: str, n: int) -> float:
    started = time.perf_counter()
    res = run_load(dispatch_spec(base, key, threads=8, count=n))
    if res["ok"] != n:
        log(f"  warning: {res['ok']} of {n} dispatches succeeded: {res['errors']}")
    return time.perf_counter() - started


def measure(
    receiver: ReceiverClient, n: int, started: float, timeout: float, procs: Any = None
) -> dict[str, Any]:
    """Wait for n deliveries (or the timeout); return the rate figures (and CPU use)."""
    cpu0 = cpu_snapshot(procs) if procs else None
    done = receiver.wait_count(n, timeout)
    cpu = cpu_report(cpu0, cpu_snapshot(procs), time.time() - started) if procs else ""
    times = sorted(r["t"] for r in receiver.records())
    got = len(times)
    steady = (got - 1) / (times[-1] - times[0]) if got > 1 and times[-1] > times[0] else 0.0
    wall = (times[-1] - started) if times else float("nan")
    return {
        "n": got,
        "complete": done,
        "rate": steady,
        "wall": wall,
        "wall_rate": got / wall if times else 0.0,
        "cpu": cpu,
    }


def run_ours(
    procs,
    env,
    receiver,
    base,
    key,
    n,
    workers,
    worker_class=None,
    name="ours",  # type: ignore[no-untyped-def]
    profile=False,
):
    """Dispatch n jobs (no workers), then start the pool and count deliveries."""
    receiver.reset()
    secs = dispatch_backlog(base, key, n)
    log(f"  [{name}] dispatched {n} jobs in {secs:.1f}s (no workers running)")
    started = time.time()
    if worker_class is None:
        start_workers(procs, env, workers, name=name)
    else:
        start_pool(procs, env, worker_class, "dispatched", workers, name=name)
    if profile:
        import threading

        def spy() -> None:
            receiver.wait_count(n // 5, 60)
            spies = profile_children(procs.pid(name), 5, name)
            for s in spies:
                s.wait(60)
            log(profile_summary([s.path for s in spies], top=40))

        threading.Thread(target=spy, daemon=True).start()
    res = measure(receiver, n, started, timeout=240, procs=procs)
    res["memory"] = tree_memory(procs.pid(name))
    procs.stop(name)
    return res


def run_bare(procs, env, receiver, n, workers):  # type: ignore[no-untyped-def]
    receiver.reset()
    bare_task.enqueue(redis_conn(), BARE_QUEUE, receiver.url("/bare"), n)
    started = time.time()
    start_pool(procs, env, "bench.bare_task.BareWorker", BARE_QUEUE, workers, name="bare")
    res = measure(receiver, n, started, timeout=240, procs=procs)
    res["memory"] = tree_memory(procs.pid("bare"))
    procs.stop("bare")
    return res


def show(label: str, res: dict[str, Any]) -> None:
    mem = res.get("memory") or []
    rss = max((m["rss"] for m in mem), default=0.0)
    log(
        f"  {label:34s} {res['rate']:7.1f} deliveries/s steady   ({res['n']} delivered"
        f"{'' if res['complete'] else ', INCOMPLETE'}; {res['wall']:.1f}s from pool start = "
        f"{res['wall_rate']:.1f}/s incl. start-up; max RSS/process {rss:.0f} MiB)"
    )
    if res.get("cpu"):
        log(f"    {res['cpu']}")


def setup(procs, args):  # type: ignore[no-untyped-def]
    env = reset(args.db)
    receiver = ReceiverClient(procs)
    team = create_team(env, receiver.url("/hook"))
    base = start_web(procs, env)
    return env, receiver, team, base


def main() -> None:
    parser = common_args(__doc__ or "")
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("-w", "--workers", type=int, default=4)
    parser.add_argument("--profile", action="store_true", help="py-spy the delivery workers")
    args = parser.parse_args()
    log(f"== delivery throughput, db={args.db}, N={args.n}, W={args.workers}")
    with processes() as procs:
        env, receiver, team, base = setup(procs, args)
        bare = run_bare(procs, env, receiver, args.n, args.workers)
        show("baseline bare RQ (SimpleWorker)", bare)
        ours = run_ours(
            procs, env, receiver, base, team["apiKey"], args.n, args.workers, profile=args.profile
        )
        show("worker.py (DeliveryWorker)", ours)
    ratio = ours["rate"] / bare["rate"] if bare["rate"] else float("nan")
    log(
        f"RATIO worker.py/bare-RQ deliveries/s [{args.db}, W={args.workers}] = {ratio:.3f}"
        "  (target >= 0.8)"
    )


if __name__ == "__main__":
    main()
