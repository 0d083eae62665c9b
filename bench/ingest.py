"""Ingest (issue 11, part 1): single dispatch against /healthz, latency at a fixed rate, and
batch dispatch (100 jobs per request), all on the same gunicorn in one run.

    .venv/bin/python bench/ingest.py --db postgres

Phases (no worker or scheduler runs: accepted jobs just wait, as in dispatch_api.py):

1. closed loop, ``--threads`` load threads, rounds alternating GET /healthz and
   POST /api/jobs/dispatch (a job due now) so machine noise hits both alike → req/s, p50, p99;
2. open loop at ``--rate`` requests/s (100) for ``--rate-seconds`` each, dispatch and (the same-run
   baseline) /healthz alternating in 10 s rounds → p50, p99 (target for dispatch ≤ 50 ms);
3. batch: ``--batch-threads`` threads each POSTing /api/jobs/dispatch/batch with ``--batch``
   items, rounds alternating jobs scheduled an hour ahead and jobs due now → jobs/s, with the
   single-dispatch rate of phase 1 beside it. Skipped when the route does not exist (a run of
   the code before the batch route). A batch answer counts only if every item became a job.

Targets (issue 11): dispatch/healthz ≥ 0.35 with p99 ≤ 50 ms at 100 req/s; batch ≥ 2,000
scheduled and ≥ 1,000 immediate jobs/s. The machine is shared: the background load is printed
first, and "machine busy" per phase.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    GUNICORN_ARGS,
    PG_URL,
    background_load,
    common_args,
    create_team,
    dispatch_spec,
    log,
    ms,
    processes,
    reset,
    run_load,
    start_web,
    summarize,
)


def _busy(seconds: float) -> str:
    return f"machine busy {background_load(seconds):.2f} cores"


def _count_jobs(db: str) -> int:
    if db == "postgres":
        import psycopg

        with psycopg.connect(PG_URL.replace("+psycopg", ""), autocommit=True) as conn:
            return int(conn.execute("SELECT count(*) FROM jobs").fetchone()[0])
    import sqlite3

    from bench.common import SQLITE_PATH

    with sqlite3.connect(SQLITE_PATH) as conn:
        return int(conn.execute("SELECT count(*) FROM jobs").fetchone()[0])


def _rounds(specs: dict, rounds: int, seconds: float, per_request: dict[str, int]) -> dict:
    """Alternate the specs for ``rounds`` rounds; return {name: (units/s, latency summary, ok)}."""
    results: dict[str, list[dict]] = {name: [] for name in specs}
    for r in range(rounds):
        for name, spec in specs.items():
            res = run_load({**spec, "duration": seconds, "warmup": 0.5, "raw": True})
            results[name].append(res)
            unit = per_request.get(name, 1)
            log(
                f"  round {r + 1} {name:18s} {res['rps'] * unit:8.1f} /s  "
                f"p50 {ms(res['latency']['p50'])}  p99 {ms(res['latency']['p99'])}  "
                f"errors {res['errors'] or 0}"
            )
    names = list(specs)
    out: dict = {}
    if len(names) == 2:  # each round's ratio: the two ran back to back, under the same noise
        ratios = sorted(b["rps"] / a["rps"] for a, b in zip(*results.values(), strict=True))
        out["median ratio"] = statistics.median(ratios)
        log(
            f"  per-round {names[1]}/{names[0]}: {', '.join(f'{x:.3f}' for x in ratios)}"
            f" (median {out['median ratio']:.3f})"
        )
    for name, runs in results.items():
        ok = sum(r["ok"] for r in runs)
        elapsed = sum(r["elapsed"] for r in runs)
        lat = summarize([x for r in runs for x in r["raw"]])
        errors = sum(sum(r["errors"].values()) for r in runs)
        rate = ok * per_request.get(name, 1) / elapsed
        out[name] = (rate, lat, ok)
        log(
            f"{name:18s}: {rate:8.1f} /s   p50 {ms(lat['p50'])}   p99 {ms(lat['p99'])}"
            f"   ({ok} requests ok, {errors} errors)"
        )
    return out


def main() -> None:
    parser = common_args(__doc__ or "")
    parser.add_argument("--threads", type=int, default=16, help="load threads, phase 1")
    parser.add_argument("--seconds", type=float, default=4.0, help="per round and endpoint")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--rate", type=float, default=100.0, help="dispatches/s, phase 2")
    parser.add_argument("--rate-seconds", type=float, default=20.0)
    parser.add_argument("--batch", type=int, default=100, help="items per batch request")
    parser.add_argument("--batch-threads", type=int, default=4)
    parser.add_argument("--phases", default="123", help="which phases to run, e.g. 13")
    args = parser.parse_args()
    log(
        f"== ingest, db={args.db}, gunicorn {' '.join(GUNICORN_ARGS)}; phase 1: {args.threads} "
        f"threads, {args.rounds} x {args.seconds:g}s per endpoint; phase 2: {args.rate:g}/s for "
        f"{args.rate_seconds:g}s; phase 3: {args.batch} per batch, {args.batch_threads} threads"
    )
    env = reset(args.db)
    with processes() as procs:
        team = create_team(env, "http://127.0.0.1:9/hook")
        base = start_web(procs, env)
        auth = {"Authorization": f"Bearer {team['apiKey']}", "Content-Type": "application/json"}
        single = {
            "healthz": {"url": base + "/healthz", "method": "GET", "threads": args.threads},
            "dispatch": dispatch_spec(base, team["apiKey"], threads=args.threads),
        }
        for spec in single.values():  # warm both (imports, pools, first-request costs)
            run_load({**spec, "duration": 2.0})
        log(f"-- phase 1: closed loop ({_busy(1)})")
        one = _rounds(single, args.rounds, args.seconds, {})
        paced = {"latency": {"p99": float("nan")}}
        if "2" in args.phases:
            log(f"-- phase 2: open loop at {args.rate:g} req/s ({_busy(1)})")
            rounds = max(1, round(args.rate_seconds / 10))
            at_rate = {
                name: {**spec, "rate": args.rate, "raw": True} for name, spec in single.items()
            }
            raw: dict[str, list[float]] = {name: [] for name in at_rate}
            for _ in range(rounds):  # healthz at the same rate, alternating: the same noise
                for name, spec in at_rate.items():
                    res = run_load({**spec, "duration": args.rate_seconds / rounds, "warmup": 1})
                    raw[name] += res["raw"]
                    if name == "dispatch":
                        paced = res
            for name, values in raw.items():
                lat = summarize(values)
                log(
                    f"{name} at {args.rate:g}/s: p50 {ms(lat['p50'])}, p90 {ms(lat['p90'])}, "
                    f"p99 {ms(lat['p99'])}, max {ms(lat['max'])} ({lat['n']} requests)"
                )
                if name == "dispatch":
                    paced = {**paced, "latency": lat}
        lat = paced["latency"]
        import requests

        probe = requests.post(base + "/api/jobs/dispatch/batch", headers=auth, timeout=10, json={})
        batch_results = None
        if "3" not in args.phases:
            pass
        elif probe.status_code == 404:
            log("-- phase 3 skipped: no POST /api/jobs/dispatch/batch in this code")
        else:
            batch = {
                "url": base + "/api/jobs/dispatch/batch",
                "method": "POST",
                "headers": auth,
                "threads": args.batch_threads,
                "batch": args.batch,
            }
            specs = {
                "batch scheduled": {**batch, "batch_due_in": 3600},
                "batch immediate": batch,
            }
            for spec in specs.values():
                run_load({**spec, "duration": 2.0})
            log(f"-- phase 3: batch dispatch ({_busy(1)})")
            per = {name: args.batch for name in specs}
            batch_results = _rounds(specs, args.rounds, args.seconds, per)
        time.sleep(0.5)
        jobs = _count_jobs(args.db)
    log(f"jobs in the table at the end: {jobs}")
    ratio = one["dispatch"][0] / one["healthz"][0]
    log(
        f"single dispatch {one['dispatch'][0]:.1f}/s vs healthz {one['healthz'][0]:.1f}/s; "
        f"p99 at {args.rate:g}/s {ms(lat['p99'])} (target ≤ 50 ms)"
    )
    if batch_results:
        sched, immediate = batch_results["batch scheduled"][0], batch_results["batch immediate"][0]
        log(
            f"batch: scheduled {sched:.0f} jobs/s (target ≥ 2000), immediate {immediate:.0f} "
            f"jobs/s (target ≥ 1000); single dispatch {one['dispatch'][0]:.0f} jobs/s; "
            f"batch/single: scheduled {sched / one['dispatch'][0]:.1f}x, immediate "
            f"{immediate / one['dispatch'][0]:.1f}x"
        )
    log(
        f"RATIO dispatch/healthz req/s [{args.db}] = {ratio:.3f}  (median of the per-round "
        f"ratios {one['median ratio']:.3f}; target >= 0.35)"
    )


if __name__ == "__main__":
    main()
