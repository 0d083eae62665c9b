"""Benchmark 1: POST /api/jobs/dispatch vs GET /healthz on the same gunicorn, same run.

    .venv/bin/python bench/dispatch_api.py --db postgres
    .venv/bin/python bench/dispatch_api.py --db sqlite

gunicorn --workers 2 --threads 8 (no access log); load from a separate process with
--threads threads (one requests.Session each, closed loop). Rounds alternate healthz and
dispatch so machine noise hits both alike. No worker runs: dispatched jobs just queue up.
Target: dispatch req/s >= 0.5 x healthz req/s.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    GUNICORN_ARGS,
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


def profile_round(procs, spec: dict, seconds: float, db: str) -> None:  # type: ignore[no-untyped-def]
    """One more dispatch round with py-spy recording every gunicorn worker (not counted)."""
    from bench.common import profile_children
    from bench.profile_summary import summarize as profile_summary

    spies = profile_children(procs.pid("web"), seconds, f"dispatch-{db}")
    run_load({**spec, "duration": seconds})
    for spy in spies:
        spy.wait(60)
    log(profile_summary([spy.path for spy in spies], top=30))


def main() -> None:
    parser = common_args(__doc__ or "")
    parser.add_argument("--threads", type=int, default=16, help="load threads")
    parser.add_argument("--seconds", type=float, default=8.0, help="per round and endpoint")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the gunicorn workers during one extra dispatch round",
    )
    args = parser.parse_args()
    log(
        f"== dispatch API vs healthz, db={args.db}, gunicorn {' '.join(GUNICORN_ARGS)}, "
        f"{args.threads} load threads, {args.rounds} x {args.seconds:g}s per endpoint"
    )
    env = reset(args.db)
    results: dict[str, list[dict]] = {"healthz": [], "dispatch": []}
    with processes() as procs:
        team = create_team(env, "http://127.0.0.1:9/hook")
        base = start_web(procs, env)
        specs = {
            "healthz": {"url": base + "/healthz", "method": "GET", "threads": args.threads},
            "dispatch": dispatch_spec(base, team["apiKey"], threads=args.threads),
        }
        for spec in specs.values():  # warm both (imports, pools, first-request costs)
            run_load({**spec, "duration": 2.0})
        for r in range(args.rounds):
            for name, spec in specs.items():
                res = run_load({**spec, "duration": args.seconds, "warmup": 0.5, "raw": True})
                results[name].append(res)
                log(
                    f"  round {r + 1} {name:8s} {res['rps']:8.1f} req/s  "
                    f"p50 {ms(res['latency']['p50'])}  p99 {ms(res['latency']['p99'])}  "
                    f"errors {res['errors'] or 0}"
                )
        if args.profile:
            profile_round(procs, specs["dispatch"], args.seconds, args.db)
    out = {}
    for name, rounds in results.items():
        ok = sum(r["ok"] for r in rounds)
        elapsed = sum(r["elapsed"] for r in rounds)
        lat = summarize([x for r in rounds for x in r["raw"]])
        errors = sum(sum(r["errors"].values()) for r in rounds)
        out[name] = (ok / elapsed, lat)
        log(
            f"{name:8s}: {ok / elapsed:8.1f} req/s   p50 {ms(lat['p50'])}   p99 {ms(lat['p99'])}"
            f"   ({ok} ok, {errors} errors)"
        )
    ratio = out["dispatch"][0] / out["healthz"][0]
    log(f"RATIO dispatch/healthz req/s [{args.db}] = {ratio:.3f}  (target >= 0.5)")


if __name__ == "__main__":
    main()
