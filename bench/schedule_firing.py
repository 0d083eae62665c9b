"""Benchmark: recurring schedules (issue 12) — fire lateness and per-tick firing cost.

    BENCH_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/<own db> \\
    BENCH_REDIS_URL=redis://127.0.0.1:6379/<own index> \\
        .venv/bin/python bench/schedule_firing.py [--schedules 1000] [--minutes 2] [--idle 100000]

Both URLs are required and are wiped (the database's public schema is rebuilt with the
migrations, the Redis index FLUSHDB'd): point them at a database and an index of your own.

1. Lateness: ``--schedules`` schedules (``* * * * *``, spread over 10 projects and 5 time zones)
   fire each minute for ``--minutes`` minutes from a real ``scheduler.py``, with ``worker.py``
   delivering to a local receiver. Lateness = when the fire's record and job became visible
   (committed) in the DB - its fire time, observed by polling every 5 ms (negative: the job
   was created ahead of its time, ``SCHEDULE_FIRE_AHEAD``). Target: p99 <= 250 ms. Also
   printed: the first attempts' start lateness (fire time -> HTTP request start, from
   ``attempts.lateness_ms``), what a receiver sees.
2. Per-tick cost: one firing pass (``schedules.fire_due``, in this process, fake clock) that
   fires the same 100 due schedules, with 1,000 idle schedules in the table (their next fire a
   year away), then ``--idle`` (100,000), then 1,000 again; also an empty pass (nothing due)
   after each. Median of 30 passes each; the ratio is against the mean of the two 1k runs.
   Target: ratio 100k / 1k <= 1.2.
Last line: both ratios of the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import PYTHON, ROOT, ReceiverClient, background_load, log, processes  # noqa: E402

ZONES = ["UTC", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "Asia/Kolkata"]
PLANS = '{"scale": {"rate_per_minute": 100000000, "monthly_quota": null}}'


def env_for(database_url: str, redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASK_", "PLAN_"))}
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        PLANS_JSON=PLANS,
        ALLOW_PRIVATE_WEBHOOKS="1",
        DISPATCHED_ENV="development",
        SECRET_KEY="bench-secret-key",
        LOG_LEVEL="WARNING",
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
    )
    return env


def reset(env: dict[str, str]) -> None:
    import subprocess

    import sqlalchemy as sa
    from redis import Redis

    Redis.from_url(env["REDIS_URL"]).flushdb()
    engine = sa.create_engine(env["DATABASE_URL"])
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("DROP SCHEMA IF EXISTS public CASCADE"))
            conn.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()
    subprocess.run(
        [PYTHON, "-m", "flask", "--app", "wsgi", "db", "upgrade"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )


def make_app(env: dict[str, str]):  # type: ignore[no-untyped-def]
    os.environ.update({k: v for k, v in env.items() if k in ("PLANS_JSON", "DISPATCHED_ENV")})
    from config import Config
    from dispatched import create_app

    return create_app(
        Config,
        SQLALCHEMY_DATABASE_URI=env["DATABASE_URL"],
        REDIS_URL=env["REDIS_URL"],
        SECRET_KEY="bench-secret-key",
        ENV="development",
        LOG_LEVEL="WARNING",
    )


def add_schedules(
    team_id: int, project_ids: list[int], count: int, cron: str, next_at: datetime | None
) -> list[str]:
    """Insert ``count`` schedules directly (bulk), round-robin over the projects and zones."""
    import sqlalchemy as sa

    from dispatched import cron as cronlib
    from dispatched.extensions import db
    from dispatched.ids import new_id
    from dispatched.models import Schedule

    del team_id
    now = datetime.now(UTC)
    rows = []
    for i in range(count):
        zone = ZONES[i % len(ZONES)]
        first = next_at or cronlib.next_fire(cron, cronlib.zone(zone), now).at
        rows.append(
            {
                "id": new_id("sch"),
                "project_id": project_ids[i % len(project_ids)],
                "name": None,
                "cron": cron,
                "timezone": zone,
                "payload": {"n": i},
                "max_retries": 3,
                "catch_up": "none",
                "paused": False,
                "next_fire_at": first,
                "next_fire_dst": None,
                "created_at": now,
                "updated_at": now,
            }
        )
    for start in range(0, len(rows), 5000):
        db.session.execute(sa.insert(Schedule), rows[start : start + 5000])
    db.session.commit()
    return [row["id"] for row in rows]


def make_projects(app, webhook_url: str, n: int = 10) -> tuple[int, list[int]]:  # type: ignore[no-untyped-def]
    from dispatched import teams
    from dispatched.extensions import db

    with app.app_context():
        created = teams.create_team("Bench schedules", "scale", webhook_url)
        ids = [created.project.id]
        for i in range(1, n):
            project = teams.create_project(created.team, f"p{i}")
            project.webhook_url = webhook_url
            ids.append(project.id)
        db.session.commit()
        return created.team.id, ids


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def watch_fires(database_url: str, minutes: list[datetime], expected: int) -> list[float]:
    """Poll the DB every 5 ms from just before each fire minute until its ``expected`` fires
    are committed; return each fire's lateness (ms): when it became visible - the fire time.
    An upper bound by the poll interval plus one query (~1-5 ms)."""
    import sqlalchemy as sa

    engine = sa.create_engine(database_url)
    query = sa.text("SELECT count(*) FROM schedule_fires WHERE fire_at = :at")
    late: list[float] = []
    with engine.connect() as conn:
        for minute in minutes:
            while time.time() < minute.timestamp() - 0.5:
                time.sleep(0.05)
            seen = 0
            deadline = minute.timestamp() + 30
            while seen < expected and time.time() < deadline:
                count = conn.execute(query, {"at": minute}).scalar_one()
                conn.rollback()
                if count > seen:
                    late += [(time.time() - minute.timestamp()) * 1000] * (count - seen)
                    seen = count
                time.sleep(0.005)
    engine.dispose()
    return late


def lateness_phase(env: dict[str, str], schedules_n: int, minutes: int) -> dict[str, float]:
    import sqlalchemy as sa

    from dispatched.extensions import db

    reset(env)
    app = make_app(env)
    with processes() as procs:
        receiver = ReceiverClient(procs, name="schedules-receiver")
        team_id, projects = make_projects(app, f"{receiver.base}/hook")
        with app.app_context():
            add_schedules(team_id, projects, schedules_n, "* * * * *", None)
            first = db.session.execute(sa.text("SELECT min(next_fire_at) FROM schedules")).scalar()
            db.session.rollback()
        first = first if first.tzinfo else first.replace(tzinfo=UTC)
        if first.timestamp() - time.time() < 15:  # time for the processes to start
            first += timedelta(minutes=1)
        procs.start("schedules-worker", [PYTHON, str(ROOT / "worker.py")], env)
        procs.start("schedules-scheduler", [PYTHON, str(ROOT / "scheduler.py")], env)
        fire_minutes = [first + timedelta(minutes=m) for m in range(minutes)]
        log(f"  {schedules_n} schedules; measuring the fires of {len(fire_minutes)} minutes")
        late = watch_fires(env["DATABASE_URL"], fire_minutes, schedules_n)
        time.sleep(8)  # the last minute's deliveries
        with app.app_context():
            starts = [
                float(ms)
                for (ms,) in db.session.execute(
                    sa.text(
                        "SELECT a.lateness_ms FROM attempts a JOIN jobs j ON j.id = a.job_id "
                        "WHERE a.number = 1 AND j.schedule_id IS NOT NULL"
                    )
                ).all()
                if ms is not None
            ]
            db.session.rollback()
        with app.app_context():
            created = db.session.execute(
                sa.text(
                    "SELECT count(*) FROM schedule_fires WHERE outcome = 'created' "
                    "AND fire_at = ANY(:at)"
                ),
                {"at": fire_minutes},
            ).scalar()
            db.session.rollback()
    expected = schedules_n * minutes
    log(
        f"  fires committed {len(late)} of {expected} ({created} with a job); lateness ms "
        f"(fire time -> job committed): p50 {pct(late, 50):.0f}  p90 {pct(late, 90):.0f}  "
        f"p99 {pct(late, 99):.0f}  max {max(late):.0f} (negative: created ahead of time)"
    )
    if starts:
        log(
            f"  first attempts {len(starts)}; start lateness ms (fire time -> request start): "
            f"p50 {pct(starts, 50):.0f}  p90 {pct(starts, 90):.0f}  p99 {pct(starts, 99):.0f}  "
            f"max {max(starts):.0f}"
        )
    return {"p99": pct(late, 99), "p50": pct(late, 50), "count": len(late)}


BASE = datetime(2031, 1, 1, 0, 0, tzinfo=UTC)


def measure(app, due: int, first_minute: int, passes: int = 30) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Median seconds of a pass firing the ``due`` every-minute schedules (fake clock: one
    minute per pass) and of an empty pass right after it."""
    from dispatched import schedules

    firing, empty = [], []
    with app.app_context():
        for k in range(first_minute, first_minute + passes):
            now = BASE + timedelta(minutes=k, seconds=1)
            started = time.perf_counter()
            done = schedules.fire_due(now)
            firing.append(time.perf_counter() - started)
            assert done.created == due, done
            started = time.perf_counter()
            assert schedules.fire_due(now).created == 0
            empty.append(time.perf_counter() - started)
    return statistics.median(firing), statistics.median(empty)


def analyze(app) -> None:  # type: ignore[no-untyped-def]
    import sqlalchemy as sa

    from dispatched.extensions import db

    with app.app_context():
        if db.engine.dialect.name == "postgresql":
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(sa.text("VACUUM ANALYZE schedules"))


def cost_phase(
    env: dict[str, str], idle: int, due: int = 100, passes: int = 30
) -> dict[str, float]:
    """1k idle, then ``idle``, then 1k again (the extra rows deleted): the ratio is taken
    against the mean of the two 1k runs, so a drift of the machine's load shows."""
    import sqlalchemy as sa

    from dispatched.extensions import db

    reset(env)
    app = make_app(env)
    team_id, projects = make_projects(app, "http://127.0.0.1:9/hook", 1)
    later = BASE + timedelta(days=365)
    with app.app_context():
        add_schedules(team_id, projects, due, "* * * * *", BASE)
        add_schedules(team_id, projects, 1000, "0 0 1 1 *", later)
    analyze(app)
    small_a = measure(app, due, 0, passes)
    with app.app_context():
        extra = add_schedules(team_id, projects, idle - 1000, "0 0 1 1 *", later)
    analyze(app)
    big = measure(app, due, passes, passes)
    with app.app_context():
        for start in range(0, len(extra), 5000):
            chunk = extra[start : start + 5000]
            db.session.execute(
                sa.text("DELETE FROM schedules WHERE id IN :ids").bindparams(
                    sa.bindparam("ids", expanding=True)
                ),
                {"ids": chunk},
            )
        db.session.commit()
    analyze(app)
    small_b = measure(app, due, 2 * passes, passes)
    small_fire = (small_a[0] + small_b[0]) / 2
    small_empty = (small_a[1] + small_b[1]) / 2
    log(
        f"  pass firing {due} due: {small_a[0] * 1000:.1f} / {small_b[0] * 1000:.1f} ms with "
        f"1,000 idle (before / after), {big[0] * 1000:.1f} ms with {idle:,} idle"
    )
    log(
        f"  empty pass:        {small_a[1] * 1000:.2f} / {small_b[1] * 1000:.2f} ms with 1,000 "
        f"idle, {big[1] * 1000:.2f} ms with {idle:,} idle"
    )
    return {"fire": big[0] / small_fire, "empty": big[1] / small_empty}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=1000)
    parser.add_argument("--minutes", type=int, default=2)
    parser.add_argument("--idle", type=int, default=100_000)
    parser.add_argument("--skip-lateness", action="store_true")
    args = parser.parse_args()
    database_url = os.environ.get("BENCH_DATABASE_URL")
    redis_url = os.environ.get("BENCH_REDIS_URL")
    if not database_url or not redis_url:
        parser.error("set BENCH_DATABASE_URL and BENCH_REDIS_URL (both are wiped)")
    env = env_for(database_url, redis_url)
    log(f"background load before the run: {background_load():.2f} of {os.cpu_count()} cores")
    late = None
    if not args.skip_lateness:
        log("== lateness: fire time -> job created")
        late = lateness_phase(env, args.schedules, args.minutes)
    log("== per-tick cost: 1k vs many idle schedules")
    ratios = cost_phase(env, args.idle)
    summary = f"ratio {args.idle:,} / 1,000 idle: firing pass {ratios['fire']:.2f}, "
    summary += f"empty pass {ratios['empty']:.2f}"
    if late:
        summary = f"lateness p99 {late['p99']:.1f} ms (p50 {late['p50']:.1f}); " + summary
    log(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
