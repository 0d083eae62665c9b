"""Benchmark 6: a backlog of jobs scheduled days ahead: Redis memory per job, DB size, and
dispatch throughput with the backlog vs with an empty database, same run.

    .venv/bin/python bench/backlog.py --db postgres -n 100000

1. Empty: dispatch throughput (jobs scheduled 3 days ahead, gunicorn 2x8, 8 load threads,
   separate process) for --seconds.
2. Redis memory per scheduled job, measured on jobs created through the API: INFO memory
   used_memory before/after --api-jobs dispatches (3 days ahead), divided by their number; DB
   growth per job likewise.
3. The rest of the backlog up to N is bulk-loaded, because through the API (~100-200
   dispatches/s on 2 cores) 100 000 jobs would take 10+ minutes: jobs rows with a
   multi-row INSERT and, in Redis, exactly what ``transport_rq.schedule_at`` stores (an RQ job
   hash built by rq-scheduler's own ``_create_job`` + the ``rq:scheduler:scheduled_jobs``
   sorted-set entry), pipelined. used_memory over the whole backlog is printed as a
   cross-check of (2).
4. Backlog: the same dispatch throughput measurement again.
Targets: backlog/empty throughput >= 0.9; <= 1 KB of Redis per scheduled job.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    common_args,
    create_team,
    db_size_bytes,
    dispatch_spec,
    log,
    ms,
    processes,
    redis_conn,
    reset,
    run_load,
    start_web,
)

AHEAD = 3 * 24 * 3600


def used_memory() -> int:
    conn = redis_conn()
    return int(conn.info("memory")["used_memory"])


def throughput(base: str, key: str, seconds: float, label: str) -> float:
    due = time.time() + AHEAD
    spec = dispatch_spec(
        base,
        key,
        threads=8,
        duration=seconds,
        warmup=1.0,
        due_start=due,
        due_spread=3600.0,
        count=None,
    )
    res = run_load(spec)
    log(
        f"  [{label}] scheduled dispatch: {res['rps']:.1f} req/s  p50 {ms(res['latency']['p50'])}"
        f"  p99 {ms(res['latency']['p99'])}  errors {res['errors'] or 0}"
    )
    return res["rps"]


def bulk_fill(env: dict[str, str], project_id: int, team_id: int, n: int) -> float:
    """Insert n scheduled jobs as jobs.create + transport_rq.schedule_at would leave them."""
    os.environ.update(env)
    import sqlalchemy as sa
    from rq_scheduler import Scheduler

    from dispatched import create_app, redis_client, transport_rq
    from dispatched.extensions import db
    from dispatched.ids import new_id
    from dispatched.models import Job, MonthlyUsage

    started = time.perf_counter()
    app = create_app()
    with app.app_context():
        conn = redis_client.connection()
        scheduler = Scheduler(queue_name=app.config["DELIVERY_QUEUE"], connection=conn)
        timeout = app.config["PLANS"]["scale"]["delivery_timeout"]
        base = datetime.now(UTC) + timedelta(seconds=AHEAD)
        table = Job.__table__
        batch = 5000
        for start in range(0, n, batch):
            now = datetime.now(UTC)
            rows = []
            pipe = conn.pipeline(transaction=False)
            for i in range(start, min(start + batch, n)):
                when = base + timedelta(seconds=i)
                job_id = new_id("job")
                rows.append(
                    dict(
                        id=job_id,
                        project_id=project_id,
                        status="QUEUED",
                        payload={"i": i},
                        scheduled_for=when,
                        next_attempt_at=when,
                        max_retries=10,
                        attempts=0,
                        retry_base=0,
                        idempotency_key=None,
                        needs_handoff=False,
                        created_at=now,
                        updated_at=now,
                    )
                )
                rq_id = transport_rq.rq_job_id(job_id, 1)
                job = scheduler._create_job(
                    transport_rq.DELIVER_TASK,
                    args=(job_id, 1),
                    kwargs={},
                    commit=False,
                    result_ttl=0,
                    id=rq_id,
                    description=f"deliver {job_id} attempt 1",
                    queue_name=app.config["DELIVERY_QUEUE"],
                    timeout=timeout + 30,
                )
                job.save(pipeline=pipe)
                pipe.zadd(scheduler.scheduled_jobs_key, {rq_id: int(when.timestamp()) + 1})
            db.session.execute(table.insert(), rows)
            db.session.execute(
                sa.update(MonthlyUsage.__table__)
                .where(MonthlyUsage.__table__.c.team_id == team_id)
                .values(jobs=MonthlyUsage.__table__.c.jobs + len(rows))
            )
            db.session.commit()
            pipe.execute()
        db.engine.dispose()
    return time.perf_counter() - started


def main() -> None:
    parser = common_args(__doc__ or "")
    parser.add_argument("-n", type=int, default=100_000, help="backlog size")
    parser.add_argument("--api-jobs", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    log(f"== backlog, db={args.db}, N={args.n} scheduled jobs ({AHEAD // 86400} days ahead)")
    with processes() as procs:
        env = reset(args.db)
        team = create_team(env, "http://127.0.0.1:9/hook")
        key = team["apiKey"]
        base = start_web(procs, env)
        run_load(
            dispatch_spec(base, key, threads=4, count=200, due_at=time.time() + AHEAD)
        )  # warm-up
        empty = throughput(base, key, args.seconds, "empty")
        mem0, db0 = used_memory(), db_size_bytes(args.db)
        jobs0 = redis_conn().zcard("rq:scheduler:scheduled_jobs")
        t0 = time.perf_counter()
        res = run_load(
            dispatch_spec(
                base,
                key,
                threads=8,
                count=args.api_jobs,
                due_start=time.time() + AHEAD,
                due_spread=3600.0,
            )
        )
        api_secs = time.perf_counter() - t0
        mem1, db1 = used_memory(), db_size_bytes(args.db)
        per_job = (mem1 - mem0) / res["ok"]
        log(
            f"  {res['ok']} jobs via the API in {api_secs:.1f}s ({res['ok'] / api_secs:.0f}/s): "
            f"Redis +{(mem1 - mem0) / 2**20:.1f} MiB = {per_job:.0f} B per scheduled job; "
            f"DB +{(db1 - db0) / 2**20:.1f} MiB = {(db1 - db0) / res['ok']:.0f} B per job"
        )
        have = redis_conn().zcard("rq:scheduler:scheduled_jobs")
        rest = max(0, args.n - have)
        secs = bulk_fill(env, team["project"]["id"], team["team"]["id"], rest)
        mem2, db2 = used_memory(), db_size_bytes(args.db)
        total = redis_conn().zcard("rq:scheduler:scheduled_jobs")
        log(
            f"  bulk-loaded {rest} more in {secs:.1f}s: backlog now {total} scheduled jobs; "
            f"Redis used_memory {mem2 / 2**20:.1f} MiB "
            f"({(mem2 - mem0) / max(total - jobs0, 1):.0f} B per job over the whole backlog); "
            f"DB {db2 / 2**20:.1f} MiB ({args.db})"
        )
        loaded = throughput(base, key, args.seconds, f"backlog {total}")
    log(f"Redis per scheduled job: {per_job:.0f} B (API-created; target <= 1024 B)")
    log(
        f"RATIO dispatch req/s with {total}-job backlog / empty [{args.db}] = "
        f"{loaded / empty:.3f}  (target >= 0.9)"
    )


if __name__ == "__main__":
    main()
