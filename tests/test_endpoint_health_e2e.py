"""Endpoint health end to end (DESIGN.md §12) with tiny thresholds: real worker.py and
scheduler.py processes, the API over HTTP, Redis, the DB and a real HTTP receiver."""

from __future__ import annotations

import threading
import time

import pytest
import requests
import sqlalchemy as sa

from dispatched import flow_settings
from dispatched.extensions import db
from dispatched.models import Job, Project, ProjectFlow
from tests.support import dispatch_over_http as dispatch
from tests.support import wait_for

pytestmark = pytest.mark.slow

#: Pause after 3 failed attempts in a row, however short the span.
TINY = {"ENDPOINT_PAUSE_AFTER_FAILURES": "3", "ENDPOINT_PAUSE_AFTER_HOURS": "0"}


def start_stack(processes, redis, **env):
    processes.start("worker", "worker.py", **env)
    processes.start("scheduler", "scheduler.py", **env)
    wait_for(lambda: redis.scard("rq:workers:dispatched") >= 2, timeout=30, message="workers")


class Endpoint:
    """A receiver behaviour that fails until fixed, then answers 200 after ``delay`` seconds,
    noting how many requests were in flight when each one arrived."""

    def __init__(self, receiver, path: str, delay: float = 0.0) -> None:
        self.receiver, self.path, self.delay = receiver, path, delay
        self.fixed = threading.Event()
        self.arrivals: list[tuple[float, bool, int]] = []  # (time, fixed, in flight)
        self.url = receiver.on(path, self)

    def __call__(self, n: int):
        fixed = self.fixed.is_set()
        with self.receiver.lock:
            self.arrivals.append((time.time(), fixed, self.receiver.in_flight[self.path]))
        if not fixed:
            return 500, {}, b"down", 0.0
        return 200, {}, b"ok", self.delay


def flow_row(app, project_id):
    with app.app_context():
        row = db.session.get(ProjectFlow, project_id, populate_existing=True)
        values = {c.name: getattr(row, c.name) for c in ProjectFlow.__table__.columns}
        db.session.rollback()
        return values


def jobs_of(app, ids):
    with app.app_context():
        rows = db.session.execute(
            sa.select(Job.id, Job.status, Job.attempts).where(Job.id.in_(ids))
        ).all()
        db.session.rollback()
        return {row.id: (row.status, row.attempts) for row in rows}


def paused_gauge(live_server) -> int:
    text = requests.get(f"{live_server}/metrics", timeout=10).text
    line = next(x for x in text.splitlines() if x.startswith("dispatched_endpoints_paused "))
    return int(line.split()[1])


def test_pause_hold_probe_and_resume_with_slow_start(
    app, live_server, make_team, receiver, processes, redis
):
    start_stack(processes, redis, ENDPOINT_PROBE_INTERVAL="2", **TINY)
    endpoint = Endpoint(receiver, "/hook", delay=0.3)
    team = make_team("engine", webhook_url=endpoint.url)
    with app.app_context():
        db.session.get(Project, team.project_id).parallelism = 8
        db.session.commit()

    first = dispatch(live_server, team, 3, maxRetries=10)
    wait_for(
        lambda: flow_row(app, team.project_id)["endpoint_paused_at"],
        timeout=20,
        message="the endpoint to pause",
    )
    row = flow_row(app, team.project_id)
    # 3 or more: the attempts concluded in one batch count together.
    count, _, rest = row["endpoint_pause_reason"].partition(" ")
    assert int(count) >= 3 and rest.startswith("failed attempts in a row since ")
    assert row["endpoint_pause_reason"].endswith("last error: HTTP 500")
    assert paused_gauge(live_server) == 1

    held = dispatch(live_server, team, 12, maxRetries=10)
    window_start, sent_before = time.time(), len(endpoint.arrivals)
    time.sleep(4.5)  # retries of the first jobs fall due every 0.2-0.6 s: all held
    during = endpoint.arrivals[sent_before:]
    # Only probes: one at a time, at least 2 s apart (the probe interval).
    assert 1 <= len(during) <= 3, during
    assert all(in_flight == 1 for _, _, in_flight in during)
    assert all(b[0] - a[0] >= 1.9 for a, b in zip(during, during[1:], strict=False))
    states = jobs_of(app, first + held)
    attempts_made = sum(attempts for _, attempts in states.values())
    assert attempts_made == 3 + len(during)  # held attempts spend no retries
    assert {status for status, _ in states.values()} == {"QUEUED"}  # nothing discarded
    assert time.time() - window_start < 10

    endpoint.fixed.set()  # fixed; nobody resumes it: the next probe does
    wait_for(
        lambda: set(s for s, _ in jobs_of(app, first + held).values()) == {"COMPLETED"},
        timeout=30,
        message="all 15 jobs completed",
    )
    after = [a for a in endpoint.arrivals if a[1]]
    assert len(after) == 15
    # Slow start: the probe alone, then 1, then 2 at a time, ... never above the setting (8).
    assert after[0][2] == 1 and after[1][2] == 1
    assert max(in_flight for _, _, in_flight in after[:4]) <= 2
    assert max(in_flight for _, _, in_flight in after) <= 8
    row = flow_row(app, team.project_id)
    assert row["endpoint_paused_at"] is None and row["endpoint_failures"] == 0
    assert row["effective"] is None and row["slow_start"] is False  # back at its setting
    assert paused_gauge(live_server) == 0


def test_held_attempts_wait_until_a_user_resumes(
    app, live_server, make_team, receiver, processes, redis
):
    # A probe only every 10 minutes: within this test, only a resume releases the held jobs.
    start_stack(processes, redis, ENDPOINT_PROBE_INTERVAL="600", **TINY)
    endpoint = Endpoint(receiver, "/hook")
    team = make_team("engine", webhook_url=endpoint.url)
    first = dispatch(live_server, team, 3, maxRetries=0)
    wait_for(
        lambda: flow_row(app, team.project_id)["endpoint_paused_at"],
        timeout=20,
        message="the endpoint to pause",
    )
    held = dispatch(live_server, team, 5, maxRetries=0)
    time.sleep(2.5)
    assert len(endpoint.arrivals) == 3
    assert jobs_of(app, held) == dict.fromkeys(held, ("QUEUED", 0))
    assert {s for s, _ in jobs_of(app, first).values()} == {"FAILED"}

    endpoint.fixed.set()
    resumed_at = time.time()
    with app.app_context():
        assert flow_settings.resume_endpoint(team.project_id) is True
    wait_for(
        lambda: set(jobs_of(app, held).values()) == {("COMPLETED", 1)},
        timeout=20,
        message="the held jobs delivered",
    )
    assert endpoint.arrivals[3][0] - resumed_at < 2.0  # released at the next tick
    assert len(endpoint.arrivals) == 8
