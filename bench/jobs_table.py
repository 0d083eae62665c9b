#!/usr/bin/env python3
"""Jobs-table partial with 10 000 jobs in a project: render time, and the query plan.

    .venv/bin/python bench/jobs_table.py [--db sqlite|postgres] [--jobs 10000] [--runs 200]

Renders ``GET /p/<id>/jobs/rows`` (what the table's 2 s poll fetches) through the WSGI app
in-process, logged in, for the first page, a status filter and a deep page; baseline in the
same run: ``GET /healthz`` through the same client. Prints p50/p99 and the ratio.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/dispatched_bench_table"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed(client, url: str, runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        response = client.get(url)
        samples.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, (url, response.status_code)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()

    import sqlalchemy as sa
    from flask_migrate import upgrade

    from config import TestConfig
    from dispatched import create_app, teams
    from dispatched.embedded import start_redis
    from dispatched.extensions import db
    from dispatched.ids import new_id
    from dispatched.models import Job, JobStatus

    tmp = Path(tempfile.mkdtemp(prefix="bench-table-"))
    if args.db == "postgres":
        admin = sa.create_engine(
            "postgresql+psycopg://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT"
        )
        with admin.connect() as conn:
            conn.execute(sa.text("DROP DATABASE IF EXISTS dispatched_bench_table"))
            conn.execute(sa.text("CREATE DATABASE dispatched_bench_table"))
        url = PG_URL
    else:
        url = f"sqlite:///{tmp / 'bench.db'}"
    app = create_app(
        TestConfig, SQLALCHEMY_DATABASE_URI=url, REDIS_URL=start_redis(tmp), WTF_CSRF_ENABLED=False
    )
    with app.app_context():
        upgrade()
        created = teams.create_team("Bench", "scale")
        teams.create_user("bench@example.com", "bench-password", created.team)
        project_id = created.project.id
        now = datetime.now(UTC)
        statuses = [JobStatus.COMPLETED] * 8 + [JobStatus.FAILED, JobStatus.QUEUED]
        rows = [
            {
                "id": new_id("job"),
                "project_id": project_id,
                "status": statuses[i % 10],
                "payload": {"n": i},
                "scheduled_for": now - timedelta(seconds=i),
                "max_retries": 3,
                "attempts": 1,
                "retry_base": 0,
                "needs_handoff": False,
                "created_at": now - timedelta(seconds=i),
                "updated_at": now,
            }
            for i in range(args.jobs)
        ]
        db.session.execute(sa.insert(Job), rows)
        db.session.commit()
        if args.db == "postgres":
            db.session.execute(sa.text("ANALYZE jobs"))
        else:
            db.session.execute(sa.text("ANALYZE"))
        db.session.commit()
        list_sql = (
            "SELECT * FROM jobs WHERE project_id = :p ORDER BY created_at DESC, id DESC LIMIT 26"
        )
        filtered = (
            "SELECT * FROM jobs WHERE project_id = :p AND status = 'FAILED' "
            "ORDER BY created_at DESC, id DESC LIMIT 26"
        )
        explain = "EXPLAIN QUERY PLAN " if args.db == "sqlite" else "EXPLAIN "
        print(f"== query plans ({args.db}, {args.jobs} jobs)")
        for sql in (list_sql, filtered):
            plan = db.session.execute(sa.text(explain + sql), {"p": project_id}).all()
            print("  " + sql)
            for line in plan:
                print("    " + " | ".join(str(x) for x in line))
        db.session.rollback()

    client = app.test_client()
    client.post("/login", data={"email": "bench@example.com", "password": "bench-password"})
    base = f"/p/{project_id}/jobs/rows"
    first = client.get(base).get_data(as_text=True)
    assert first.count('<tr id="row-') == 25, "expected a full first page"
    cursor = re.search(r"cursor=([\w-]+)", first).group(1)
    for _ in range(20):  # warm up
        client.get(base)
        client.get("/healthz")
    results = {}
    for name, url in [
        ("healthz (baseline)", "/healthz"),
        ("rows: first page", base),
        ("rows: status=FAILED", f"{base}?status=FAILED"),
        ("rows: second page", f"{base}?cursor={cursor}"),
    ]:
        samples = timed(client, url, args.runs)
        results[name] = samples
        print(
            f"{name:22s} p50 {statistics.median(samples):7.2f} ms   "
            f"p99 {percentile(samples, 0.99):7.2f} ms"
        )
    base_p50 = statistics.median(results["healthz (baseline)"])
    rows_p50 = statistics.median(results["rows: first page"])
    print(
        f"ratio rows/healthz p50 = {rows_p50 / base_p50:.2f} "
        f"(rows p50 {rows_p50:.2f} ms with {args.jobs} jobs; target well under 100 ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
