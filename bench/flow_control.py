"""Issue 9, benchmark 6: flow control. One project with ratePerSecond 10 and parallelism 3.

    .venv/bin/python bench/flow_control.py --db postgres

Web (gunicorn 2x8), ``scheduler.py`` and ``worker.py`` (the default install: 2 processes x 64
in flight, so the workers never limit this project) run throughout. The project's flow control
is set with ``flask admin set-flow PROJECT --parallelism 3 --rate 10``. Its receiver answers
after ``--delay`` (250 ms): at parallelism 3 that allows 12 requests/s, so both limits are in
play and the rate (10/s) is the one that binds; the receiver's in-flight gauge shows whether
the parallelism cap ever gives way. N jobs (300: 30 s at the rate) are dispatched at once.

Measured at the receiver: rate = (N - 1) / (last - first request); the most requests that
started in any 1 s window (DESIGN §9: at most ratePerSecond + 1); the most requests in
flight at once. Targets (issue 9): rate within +-10 % of 10/s; max in flight = 3.
"""

from __future__ import annotations

import bisect
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    ReceiverClient,
    common_args,
    create_team,
    dispatch_spec,
    log,
    processes,
    reset,
    run_load,
    set_flow,
    start_scheduler,
    start_web,
    start_workers,
)


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """The most timestamps in any half-open window [t, t + window)."""
    times = sorted(times)
    return max((bisect.bisect_left(times, t + window) - i for i, t in enumerate(times)), default=0)


def phase(procs, env, base, args, delay: float, index: int) -> dict:  # type: ignore[no-untyped-def]
    """A fresh project (and receiver answering after ``delay``): set its flow control,
    dispatch N jobs at once, measure at its receiver."""
    receiver = ReceiverClient(procs, delay=delay, name=f"receiver{index}")
    team = create_team(env, receiver.url("/hook"), name=f"Flow {index}")
    flow = set_flow(env, team["project"]["id"], parallelism=args.parallelism, rate=args.rate)
    log(f"  [receiver {delay * 1000:.0f} ms] in force: {flow['flowControl']}")
    receiver.reset()
    t0 = time.time()
    res = run_load(dispatch_spec(base, team["apiKey"], threads=8, count=args.n))
    log(
        f"    {res['ok']} jobs dispatched in {time.time() - t0:.1f}s"
        f"{' errors ' + str(res['errors']) if res['errors'] else ''}"
    )
    expect = args.n / min(args.rate, args.parallelism / delay)
    done = receiver.wait_count(args.n, expect * 2 + 30)
    stats = receiver.stats()
    times = sorted(r["t"] for r in receiver.records() if r["job"])
    procs.stop(f"receiver{index}")
    got = len(times)
    rate = (got - 1) / (times[-1] - times[0]) if got > 1 else 0.0
    window = max_in_window(times)
    seconds: dict[int, int] = {}
    for t in times:
        seconds[int(t - times[0])] = seconds.get(int(t - times[0]), 0) + 1
    per_second = [seconds.get(i, 0) for i in range(int(times[-1] - times[0]) + 1)]
    gaps = sorted(b - a for a, b in zip(times, times[1:], strict=False))
    log(
        f"    delivered {got}/{args.n}{'' if done else ' INCOMPLETE'} in "
        f"{times[-1] - times[0]:.1f}s: rate {rate:.2f}/s; most starts in any 1 s window "
        f"{window} (limit {args.rate:g} + 1); receiver max in flight {stats['max_in_flight']}"
    )
    log(
        f"    gap between starts: min {gaps[0] * 1000:.0f} ms, p50 "
        f"{gaps[len(gaps) // 2] * 1000:.0f} ms, p90 {gaps[int(len(gaps) * 0.9)] * 1000:.0f} ms"
        f" (1/rate = {1000 / args.rate:.0f} ms); starts per second: {per_second}"
    )
    return {"rate": rate, "window": window, "max_in_flight": stats["max_in_flight"]}


def main() -> None:
    parser = common_args(__doc__ or "")
    parser.add_argument("-n", type=int, default=300)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--parallelism", type=int, default=3)
    parser.add_argument(
        "--delays",
        default="0.25,0.1",
        help="receiver answer times (s), one phase each; the first is the benchmark's, 0.1 s "
        "isolates the rate limiter (parallelism 3 then allows 30/s)",
    )
    args = parser.parse_args()
    delays = [float(x) for x in args.delays.split(",")]
    log(
        f"== flow control, db={args.db}: ratePerSecond {args.rate:g}, parallelism "
        f"{args.parallelism}, receivers {[f'{d * 1000:.0f} ms' for d in delays]}, N={args.n} "
        "each, default install"
    )
    results = []
    with processes() as procs:
        env = reset(args.db)
        base = start_web(procs, env)
        start_scheduler(procs, env)
        start_workers(procs, env)
        time.sleep(3)
        for i, delay in enumerate(delays):
            results.append(phase(procs, env, base, args, delay, i))
    main_res = results[0]
    off = main_res["rate"] / args.rate - 1
    log(
        f"targets ({delays[0] * 1000:.0f} ms receiver): rate {main_res['rate']:.2f}/s within "
        f"+-10 % of {args.rate:g}: {'met' if abs(off) <= 0.10 else 'MISSED'} ({off * 100:+.1f} %);"
        f" max in flight {main_res['max_in_flight']} = {args.parallelism}: "
        f"{'met' if main_res['max_in_flight'] == args.parallelism else 'MISSED'}; 1 s windows "
        f"<= {args.rate + 1:g}: {'met' if main_res['window'] <= args.rate + 1 else 'MISSED'}"
    )
    log(
        f"RATIO measured/configured rate [{args.db}] = "
        + ", ".join(
            f"{d * 1000:.0f} ms receiver: {r['rate'] / args.rate:.3f} (max in flight "
            f"{r['max_in_flight']})"
            for d, r in zip(delays, results, strict=True)
        )
        + f"  (target 0.9..1.1, max in flight = {args.parallelism})"
    )


if __name__ == "__main__":
    main()
