"""Benchmark 5: end-to-end latency of immediate jobs at a steady 50 jobs/s.

    .venv/bin/python bench/e2e_latency.py --db postgres -w 4 --rate 50 --seconds 30

Web (gunicorn 2x8), ``scheduler.py`` and ``worker.py`` (WORKER_CONCURRENCY=W) run. A separate
load process sends dispatches at a paced 50/s (open loop, 8 threads) and right after each one
POSTs a small body straight to the receiver (the baseline: a plain requests.post round trip
from the load process). Latency = time the receiver got the webhook - time the load process
had the dispatch's 201 response (both wall clocks of this machine). Also printed: measured
from the moment the dispatch request was sent. Target: p50 <= 20 ms, p99 <= 100 ms.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

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
    processes,
    reset,
    run_load,
    start_scheduler,
    start_web,
    start_workers,
    summarize,
)


def main() -> None:
    parser = common_args(__doc__ or "")
    parser.add_argument("-w", "--workers", type=int, default=4)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    log(
        f"== e2e latency, db={args.db}, {args.rate:g} jobs/s for {args.seconds:g}s, "
        f"W={args.workers}"
    )
    with processes() as procs:
        env = reset(args.db)
        receiver = ReceiverClient(procs)
        team = create_team(env, receiver.url("/hook"))
        base = start_web(procs, env)
        start_scheduler(procs, env)
        start_workers(procs, env, args.workers)
        # Warm the web and the workers (first requests pay for imports and connections).
        run_load(dispatch_spec(base, team["apiKey"], threads=4, rate=20, duration=3))
        time.sleep(2)
        receiver.reset()
        cpu0, t0 = cpu_snapshot(procs), time.time()
        res = run_load(
            dispatch_spec(
                base,
                team["apiKey"],
                threads=8,
                rate=args.rate,
                duration=args.seconds,
                record=True,
                probe_url=receiver.url("/probe"),
            )
        )
        cpu = cpu_report(cpu0, cpu_snapshot(procs), time.time() - t0)
        sent = {rec[1]: (rec[2], rec[3]) for rec in res["records"] if rec[1]}
        deadline = time.time() + 30
        got: dict[str, float] = {}
        while time.time() < deadline:
            got = {r["job"]: r["t"] for r in receiver.records() if r["job"] in sent and r["n"] == 1}
            if len(got) >= len(sent):
                break
            time.sleep(0.5)
    after_response = summarize([got[j] - sent[j][1] for j in got])
    after_request = summarize([got[j] - sent[j][0] for j in got])
    probe = res["probe"]
    api = res["latency"]
    log(
        f"  dispatched {len(sent)} jobs at {res['rps']:.1f}/s, delivered {len(got)}; "
        f"dispatch API p50 {ms(api['p50'])} p99 {ms(api['p99'])}"
    )
    log(
        f"  201 response -> webhook received:  p50 {ms(after_response['p50'])}  "
        f"p99 {ms(after_response['p99'])}  max {ms(after_response['max'])}"
    )
    log(
        f"  request sent -> webhook received:  p50 {ms(after_request['p50'])}  "
        f"p99 {ms(after_request['p99'])}  max {ms(after_request['max'])}"
    )
    log(f"  baseline plain POST round trip:    p50 {ms(probe['p50'])}  p99 {ms(probe['p99'])}")
    log("  " + cpu + " (load generator = the rest)")
    log(
        f"target p50 <= 20 ms: {'met' if after_response['p50'] <= 0.02 else 'MISSED'}, "
        f"p99 <= 100 ms: {'met' if after_response['p99'] <= 0.1 else 'MISSED'}"
    )
    log(
        f"RATIO e2e p50 / plain-POST p50 [{args.db}] = "
        f"{after_response['p50'] / probe['p50']:.1f}  (p99: "
        f"{after_response['p99'] / probe['p99']:.1f})"
    )


if __name__ == "__main__":
    main()
