"""Benchmark 5: end-to-end latency of immediate jobs at steady rates (issue 9: 50 and 200 jobs/s).

    .venv/bin/python bench/e2e_latency.py --db postgres --rates 50,200 --seconds 30

Web (gunicorn 2x8), ``scheduler.py`` and ``worker.py`` (the default install: 2 processes x 64
deliveries in flight; ``-w``/``-c`` change it) run throughout. For each rate, a separate load
process sends dispatches at that paced rate (open loop, enough threads that the pacing, not
the API's latency, sets the rate) and right after each one POSTs a small body straight to the
receiver (the baseline: a plain requests.post round trip from the load process).
Latency = time the receiver got the webhook - time the load process had the dispatch's 201
response (both wall clocks of this machine). Also printed: measured from the moment the
dispatch request was sent. Targets (issue 9): p50 <= 20 ms and p99 <= 100 ms at 50/s; p99 <=
250 ms at 200/s.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    ReceiverClient,
    common_args,
    cpu_report,
    cpu_snapshot,
    create_team,
    dispatch_spec,
    log,
    ms,
    pg_transactions,
    processes,
    reset,
    run_load,
    spy_on,
    start_scheduler,
    start_web,
    start_workers,
    summarize,
)

#: (p50, p99) targets in seconds per rate; None = no target.
TARGETS = {50.0: (0.020, 0.100), 200.0: (None, 0.250)}


def e2e_phase(
    procs: Any,
    base: str,
    key: str,
    receiver: ReceiverClient,
    rate: float,
    seconds: float,
    probe: bool = True,
    wait: float = 30.0,
    profile: bool | str = False,
) -> dict[str, Any]:
    """Dispatch at ``rate`` for ``seconds``; return the e2e summaries of the delivered jobs
    (``profile``: py-spy the worker pool and the scheduler for 5 s in the middle)."""
    receiver.reset()
    threads = max(8, int(rate * 0.15) + 8)  # ~150 ms of API latency per thread, and spare
    cpu0, t0, xact0 = cpu_snapshot(procs), time.time(), pg_transactions()
    spied: list[str] = []
    if profile:

        def spy() -> None:
            time.sleep(seconds / 2 - 2.5)
            spied.append(
                spy_on(procs, ["worker", "scheduler"], 5, f"e2e{rate:g}", gil=profile == "gil")
            )

        spier = threading.Thread(target=spy, daemon=True)
        spier.start()
    res = run_load(
        dispatch_spec(
            base,
            key,
            threads=threads,
            rate=rate,
            duration=seconds,
            record=True,
            **({"probe_url": receiver.url("/probe")} if probe else {}),
        )
    )
    cpu = cpu_report(cpu0, cpu_snapshot(procs), time.time() - t0)
    if profile:
        spier.join(90)
        log(f"  [{rate:g}/s] " + "\n".join(spied).replace("\n", "\n    "))
    sent = {rec[1]: (rec[2], rec[3]) for rec in res["records"] if rec[1]}
    deadline = time.time() + wait
    got: dict[str, float] = {}
    while time.time() < deadline:
        got = {r["job"]: r["t"] for r in receiver.records() if r["job"] in sent and r["n"] == 1}
        if len(got) >= len(sent):
            break
        time.sleep(0.5)
    xacts = pg_transactions() - xact0
    return {
        "xacts_per_job": xacts / max(len(got), 1),
        "sent": len(sent),
        "got": len(got),
        "rps": res["rps"],
        "threads": threads,
        "errors": res["errors"],
        "api": res["latency"],
        "probe": res["probe"],
        "after_response": summarize([got[j] - sent[j][1] for j in got]),
        "pairs": sorted((sent[j][1], got[j] - sent[j][1]) for j in got),
        "after_request": summarize([got[j] - sent[j][0] for j in got]),
        "cpu": cpu,
    }


def show(label: str, r: dict[str, Any]) -> None:
    a, q, api = r["after_response"], r["after_request"], r["api"]
    log(
        f"  [{label}] dispatched {r['sent']} jobs at {r['rps']:.1f}/s ({r['threads']} load "
        f"threads), delivered {r['got']}; dispatch API p50 {ms(api['p50'])} p99 "
        f"{ms(api['p99'])}{' errors ' + str(r['errors']) if r['errors'] else ''}"
    )
    log(
        f"    201 response -> webhook received:  p50 {ms(a['p50'])}  p99 {ms(a['p99'])}  "
        f"max {ms(a['max'])}"
    )
    log(
        f"    request sent -> webhook received:  p50 {ms(q['p50'])}  p99 {ms(q['p99'])}  "
        f"max {ms(q['max'])}"
    )
    if r["probe"]:
        log(
            f"    baseline plain POST round trip:    p50 {ms(r['probe']['p50'])}  "
            f"p99 {ms(r['probe']['p99'])}"
        )
    log("    " + r["cpu"] + " (load generator = the rest)")
    log(
        f"    PostgreSQL transactions per delivered job (web, scheduler, workers; "
        f"pg_stat_database): {r['xacts_per_job']:.1f}"
    )


def main() -> None:
    parser = common_args(__doc__ or "")
    parser.add_argument("-w", "--workers", type=int, default=None, help="WORKER_CONCURRENCY")
    parser.add_argument("-c", "--concurrency", type=int, default=None, help="DELIVERY_CONCURRENCY")
    parser.add_argument("--rates", default="50,200")
    parser.add_argument("--rate", type=float, default=None, help="one rate (older form)")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--profile", action="store_true", help="py-spy workers and scheduler")
    parser.add_argument(
        "--profile-gil", action="store_true", help="the same, GIL-holding samples only (CPU)"
    )
    args = parser.parse_args()
    rates = [args.rate] if args.rate else [float(x) for x in args.rates.split(",")]
    log(
        f"== e2e latency, db={args.db}, {rates} jobs/s for {args.seconds:g}s each, workers "
        f"{args.workers or 'default'} x {args.concurrency or 'default'}"
    )
    results = {}
    with processes() as procs:
        env = reset(args.db)
        receiver = ReceiverClient(procs)
        team = create_team(env, receiver.url("/hook"))
        base = start_web(procs, env)
        start_scheduler(procs, env)
        start_workers(procs, env, args.workers, delivery_concurrency=args.concurrency)
        # Warm the web and the workers (first requests pay for imports and connections).
        run_load(dispatch_spec(base, team["apiKey"], threads=4, rate=20, duration=3))
        time.sleep(2)
        for rate in rates:
            results[rate] = e2e_phase(
                procs,
                base,
                team["apiKey"],
                receiver,
                rate,
                args.seconds,
                profile="gil" if args.profile_gil else args.profile,
            )
            show(f"{rate:g}/s", results[rate])
            time.sleep(2)
    verdicts = []
    for rate, r in results.items():
        p50_t, p99_t = TARGETS.get(rate, (None, None))
        a = r["after_response"]
        if p50_t is not None:
            verdicts.append(
                f"{rate:g}/s p50 {ms(a['p50'])} <= {ms(p50_t)}: "
                f"{'met' if a['p50'] <= p50_t else 'MISSED'}"
            )
        if p99_t is not None:
            verdicts.append(
                f"{rate:g}/s p99 {ms(a['p99'])} <= {ms(p99_t)}: "
                f"{'met' if a['p99'] <= p99_t else 'MISSED'}"
            )
    if verdicts:
        log("targets: " + "; ".join(verdicts))
    log(
        f"RATIO e2e p50 / plain-POST p50 [{args.db}] = "
        + ", ".join(
            f"{rate:g}/s: {r['after_response']['p50'] / r['probe']['p50']:.1f} (p99: "
            f"{r['after_response']['p99'] / r['probe']['p99']:.1f})"
            for rate, r in results.items()
        )
    )


if __name__ == "__main__":
    main()
