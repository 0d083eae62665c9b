"""Issue 9, benchmark 1: deliveries/s of the delivery engine on a fast receiver, default install.

    .venv/bin/python bench/engine_throughput.py --db postgres -n 3000

For each receiver (the Python bench receiver, and Debian's nginx answering ``return 200`` if
``nginx`` is installed: a receiver that costs far less CPU, so less of each figure is the
receiver's), three phases in one run, each delivering the same N requests to it:

1. **bare RQ**: N bare RQ jobs (``bench.bare_task.post``: one keep-alive ``requests.Session``
   POST of a delivery-sized body) run by a WorkerPool of ``--bare-workers`` SimpleWorkers (4,
   the baseline of the earlier benchmark 2);
2. **raw loop**: the same concurrency as the engine (``-p`` processes x ``-c`` threads, each
   thread one ``requests.Session``) posting the body and signed headers of a real delivery,
   with no bookkeeping at all (also 1 process x 1 thread, for reference: the GIL makes 64
   threads of one process slower than one thread against a fast receiver);
3. **engine**: N jobs dispatched through the API (gunicorn 2x8) with no worker or scheduler
   running; then ``worker.py`` (WORKER_CONCURRENCY=p, DELIVERY_CONCURRENCY=c: the default
   install is 2 x 64) and ``scheduler.py`` start and the receiver counts deliveries.

Rate = (N - 1) / (last - first request at the receiver): steady state, start-up excluded (the
wall time from starting the pool is printed too). Targets (issue 9): engine >= 2x bare RQ and
>= 0.5x the raw loop (same run); moonshot >= 1000 deliveries/s. The last line gives both
ratios for each receiver.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    NginxReceiver,
    PgWaits,
    ReceiverClient,
    common_args,
    cpu_report,
    cpu_snapshot,
    create_team,
    log,
    processes,
    profile_children,
    reset,
    run_loads,
    start_scheduler,
    start_web,
    start_workers,
    tree_memory,
    wait_workers,
)
from bench.delivery_throughput import dispatch_backlog, run_bare  # noqa: E402


def rates(receiver: Any, n: int, started: float) -> dict[str, Any]:
    times = sorted(r["t"] for r in receiver.records())
    got = len(times)
    steady = (got - 1) / (times[-1] - times[0]) if got > 1 and times[-1] > times[0] else 0.0
    wall = (times[-1] - started) if times else float("nan")
    return {
        "n": got,
        "complete": got >= n,
        "rate": steady,
        "wall": wall,
        "wall_rate": got / wall if times else 0.0,
    }


class StateSampler:
    """Every 0.25 s: jobs by status (DB) and hand-over jobs waiting in the RQ queue. Shows
    where the attempts are: QUEUED (waiting for release), DISPATCHED (released, in a
    hand-over job not yet claimed), STARTED (claimed by an engine: in flight or awaiting
    its result's recording)."""

    def __init__(self) -> None:
        self.rows: list[tuple[float, int, int, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StateSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        import psycopg

        from bench.common import PG_URL, redis_conn

        conn = redis_conn()
        with psycopg.connect(PG_URL.replace("+psycopg", ""), autocommit=True) as pg:
            while not self._stop.wait(0.25):
                st = dict(pg.execute("SELECT status, count(*) FROM jobs GROUP BY status"))
                queued = st.get("QUEUED", 0)
                if not queued and not st.get("DISPATCHED") and not st.get("STARTED"):
                    continue
                self.rows.append(
                    (
                        time.time(),
                        conn.llen("rq:queue:dispatched"),
                        queued,
                        st.get("DISPATCHED", 0),
                        st.get("STARTED", 0),
                    )
                )

    def report(self) -> str:
        busy = [r for r in self.rows if r[2] > 0]  # while a backlog waits
        if not busy:
            return "job states: no samples"
        mean = [sum(r[i] for r in busy) / len(busy) for i in range(1, 5)]
        return (
            f"while the backlog lasted ({len(busy)} samples), mean: hand-over jobs in the RQ "
            f"queue {mean[0]:.0f}, attempts DISPATCHED (released, not yet claimed) "
            f"{mean[2]:.0f}, STARTED (claimed by an engine) {mean[3]:.0f}"
        )


def handovers(log_name: str) -> str:
    """Hand-over jobs the workers ran (from their log) and attempts that came that way."""
    import re

    from bench.common import LOGS

    sizes = [
        int(m.group(1))
        for m in re.finditer(
            r"dispatched: deliver (\d+) attempts", (LOGS / f"{log_name}.log").read_text()
        )
    ]
    return (
        f"{len(sizes)} hand-over RQ jobs carried {sum(sizes)} attempts (mean "
        f"{sum(sizes) / max(len(sizes), 1):.1f} per job); the rest were released by the "
        "workers themselves after a delivery"
    )


def sample_delivery() -> tuple[str, dict[str, str]]:
    """The body and signed headers of a real first attempt (one, reused by the raw loop)."""
    from dispatched import outbound, signing

    body, headers = signing.delivery_request(
        ["whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
        "job_raw0000000000000000000",
        "att_raw0000000000000000000",
        1,
        {"i": 0},
        timestamp=int(time.time()),
        bearer_token=None,
        user_agent=outbound.USER_AGENT,
    )
    return body.decode(), headers


def run_raw(procs: Any, receiver: Any, n: int, processes_: int, threads: int) -> dict[str, Any]:
    """``processes_`` load processes x ``threads`` threads POST the delivery body, N in all."""
    receiver.reset()
    body, headers = sample_delivery()
    per = n // processes_
    spec = {
        "url": receiver.url("/raw"),
        "method": "POST",
        "headers": headers,
        "body_raw": body,
        "threads": threads,
        "count": per,
        "start_delay": 1.5,  # all processes' threads start together, after their imports
    }
    cpu0, t0 = cpu_snapshot(procs), time.time()
    results = run_loads([spec] * processes_)
    res = rates(receiver, per * processes_, t0 + 1.5)
    res["cpu"] = cpu_report(cpu0, cpu_snapshot(procs), time.time() - t0) + " (the rest: load)"
    errors = {k: v for r in results for k, v in r["errors"].items()}
    if errors:
        log(f"    raw loop errors: {errors}")
    return res


def run_engine(
    procs: Any,
    env: dict[str, str],
    receiver: Any,
    base: str,
    key: str,
    n: int,
    processes_: int | None,
    threads: int | None,
    label: str,
    profile: bool,
    pg_waits: bool = False,
) -> dict[str, Any]:
    receiver.reset()
    secs = dispatch_backlog(base, key, n)
    log(f"    [engine] dispatched {n} jobs in {secs:.1f}s (no worker, no scheduler running)")
    name = f"engine-{label}"
    start_workers(procs, env, processes_, name=name, delivery_concurrency=threads)
    wait_workers("dispatched", processes_ or 2)
    time.sleep(1.0)  # the engines register and start their threads
    started = time.time()
    start_scheduler(procs, env)
    cpu0 = cpu_snapshot(procs)
    mem: list[dict[str, float]] = []

    def sample() -> None:
        receiver.wait_count(n // 2, 120)
        mem.extend(tree_memory(procs.pid(name), include_root=True))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    if profile:

        def spy() -> None:
            from bench.profile_summary import summarize as profile_summary

            receiver.wait_count(n // 5, 120)
            workers = profile_children(procs.pid(name), 4, name)
            sched = profile_children(procs.pid("scheduler"), 4, "scheduler", include_root=True)
            for s in workers + sched:
                s.wait(60)
            log("    py-spy, engine worker processes (4 s):")
            log(profile_summary([s.path for s in workers], top=40))
            log("    py-spy, scheduler process (4 s):")
            log(profile_summary([s.path for s in sched], top=25))

        threading.Thread(target=spy, daemon=True).start()
    with (
        PgWaits() if pg_waits else contextlib.nullcontext() as waits,
        StateSampler() as states,
    ):
        receiver.wait_count(n, 240)
    cpu = cpu_report(cpu0, cpu_snapshot(procs), time.time() - started)
    log("    " + states.report())
    log("    " + handovers(name))
    if waits is not None:
        log("    " + waits.report().replace("\n", "\n    "))
    sampler.join(5)
    res = rates(receiver, n, started)
    res["cpu"] = cpu
    res["memory"] = mem
    procs.stop("scheduler")
    procs.stop(name)
    return res


def show(label: str, res: dict[str, Any]) -> None:
    mem = res.get("memory") or []
    extra = ""
    if mem:
        extra = f"; RSS total {sum(m['rss'] for m in mem):.0f} MiB in {len(mem)} processes"
    log(
        f"    {label:38s} {res['rate']:7.1f} /s steady  ({res['n']} at the receiver"
        f"{'' if res['complete'] else ', INCOMPLETE'}; {res['wall']:.1f}s from start = "
        f"{res['wall_rate']:.1f}/s incl. start-up{extra})"
    )
    if res.get("cpu"):
        log(f"      {res['cpu']}")


def main() -> None:
    parser = common_args(__doc__ or "")
    parser.add_argument("-n", type=int, default=3000)
    parser.add_argument("-p", "--processes", type=int, default=2, help="WORKER_CONCURRENCY")
    parser.add_argument("-c", "--concurrency", type=int, default=64, help="DELIVERY_CONCURRENCY")
    parser.add_argument("--bare-workers", type=int, default=4)
    parser.add_argument("--receivers", default="python,nginx")
    parser.add_argument("--profile", action="store_true", help="py-spy the engine's workers")
    parser.add_argument(
        "--pg-waits", action="store_true", help="sample pg_stat_activity in the engine phase"
    )
    parser.add_argument(
        "--no-raw-reference",
        dest="raw_reference",
        action="store_false",
        help="skip the single-threaded raw loop (printed for reference, not in the ratio)",
    )
    args = parser.parse_args()
    wanted = args.receivers.split(",")
    if "nginx" in wanted and not shutil.which("nginx"):
        log("  nginx not installed (apt-get install -y nginx-light): python receiver only")
        wanted.remove("nginx")
    log(
        f"== engine throughput, db={args.db}, N={args.n}, engine {args.processes} processes x "
        f"{args.concurrency} threads, raw loop {args.processes} x {args.concurrency}, bare RQ "
        f"pool {args.bare_workers}, receivers {wanted}"
    )
    summary = []
    with processes() as procs:
        env = reset(args.db)
        base = start_web(procs, env)
        for rname in wanted:
            receiver: Any = ReceiverClient(procs) if rname == "python" else NginxReceiver(procs)
            log(f"  receiver: {rname} ({receiver.base})")
            team = create_team(env, receiver.url("/hook"), name=f"Bench {rname}")
            bare = run_bare(procs, env, receiver, args.n, args.bare_workers)
            show(f"bare RQ SimpleWorker x{args.bare_workers}", bare)
            raw = run_raw(procs, receiver, args.n, args.processes, args.concurrency)
            show(f"raw requests loop {args.processes}x{args.concurrency}", raw)
            if args.raw_reference:
                ref = run_raw(procs, receiver, args.n, 1, 1)
                show("raw requests loop 1x1 (reference)", ref)
            ours = run_engine(
                procs,
                env,
                receiver,
                base,
                team["apiKey"],
                args.n,
                args.processes,
                args.concurrency,
                rname,
                args.profile,
                args.pg_waits,
            )
            show(f"engine worker.py {args.processes}x{args.concurrency}", ours)
            procs.stop(rname if rname == "nginx" else "receiver")
            summary.append(
                f"{rname}: engine {ours['rate']:.0f}/s, engine/bare-RQ = "
                f"{ours['rate'] / bare['rate']:.2f} (target >= 2), engine/raw-loop = "
                f"{ours['rate'] / raw['rate']:.2f} (target >= 0.5)"
            )
    log("RATIO [" + args.db + "] " + "; ".join(summary))


if __name__ == "__main__":
    main()
