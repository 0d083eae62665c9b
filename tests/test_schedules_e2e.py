"""Schedules end to end (DESIGN.md §13): real scheduler.py and worker.py processes, the DB,
Redis and a real HTTP receiver. Exactly one job per (schedule, fire time) with two scheduler
processes firing and one of them killed and restarted; catchUp across a restart."""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from dispatched.extensions import db
from dispatched.models import Job, Schedule, ScheduleFire
from tests.support import answer, wait_for

pytestmark = pytest.mark.slow

ZONES = ["UTC", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "Europe/Berlin"]


def create(client, team, **fields):
    body = {"cron": "* * * * *", "payload": {"hello": "schedule"}, **fields}
    r = client.post("/api/schedules", json=body, headers=team.headers)
    assert r.status_code == 201, r.json
    return r.json["scheduleId"]


def rows(app, query):
    with app.app_context():
        result = db.session.execute(query).all()
        db.session.rollback()
        return result


def next_boundary(now: datetime) -> datetime:
    return now.replace(second=0, microsecond=0) + timedelta(minutes=1)


def test_two_schedulers_one_killed_and_restarted_fire_each_time_once(
    app, client, make_team, receiver, processes, redis
):
    team = make_team("e2e", webhook_url=receiver.on("/tick", answer(200)))
    ids = [create(client, team, timezone=ZONES[i % len(ZONES)]) for i in range(20)]
    processes.start("worker", "worker.py")
    processes.start("scheduler-a", "scheduler.py")
    processes.start("scheduler-b", "scheduler.py")
    first = rows(app, sa.select(sa.func.min(Schedule.next_fire_at)))[0][0]
    assert rows(app, sa.select(sa.func.max(Schedule.next_fire_at)))[0][0] == first

    def delivered(n):
        return lambda: len(receiver.received("/tick")) >= n

    wait_for(delivered(20), timeout=first.timestamp() - time.time() + 40, message="fire 1")
    # Kill one scheduler (perhaps mid-pass, holding the loop's lock) and start another.
    processes.kill("scheduler-a", signal.SIGKILL)
    processes.start("scheduler-c", "scheduler.py")
    second = first + timedelta(minutes=1)
    wait_for(delivered(40), timeout=second.timestamp() - time.time() + 40, message="fire 2")
    time.sleep(1.0)  # anything extra would show up now

    jobs = rows(app, sa.select(Job.schedule_id, Job.scheduled_for, Job.created_at, Job.status))
    assert sorted((s, at) for s, at, _, _ in jobs) == sorted(
        (sid, at) for sid in ids for at in (first, second)
    )
    assert {status for *_, status in jobs} == {"COMPLETED"}
    fires = rows(app, sa.select(ScheduleFire.schedule_id, ScheduleFire.outcome))
    assert len(fires) == 40 and {outcome for _, outcome in fires} == {"created"}
    got = [(r.json["jobId"]) for r in receiver.received("/tick")]
    assert len(got) == len(set(got)) == 40
    # Jobs are created up to SCHEDULE_FIRE_AHEAD (1 s) before their fire time, never late
    # by more than a pass, and never delivered before it.
    lateness = sorted((created - at).total_seconds() for _, at, created, _ in jobs)
    assert lateness[0] >= -1.5 and lateness[-1] < 2.0, lateness
    by_job = {job_id: at for job_id, at in rows(app, sa.select(Job.id, Job.scheduled_for))}
    early = [r for r in receiver.received("/tick") if r.at < by_job[r.json["jobId"]].timestamp()]
    assert early == []
    logs = processes.log("scheduler-b") + processes.log("scheduler-c")
    assert "Traceback" not in logs


def test_catch_up_policies_across_a_scheduler_restart(app, client, make_team, processes):
    team = make_team("e2e")
    skip = create(client, team, catchUp="none")
    make_up = create(client, team, catchUp="latest")
    # Everything was down for five minutes: the stored next fire is five minutes old.
    while not 3 <= datetime.now(UTC).second <= 50:
        time.sleep(0.5)
    down_since = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
    latest = down_since + timedelta(minutes=5)
    with app.app_context():
        for sid in (skip, make_up):
            db.session.get(Schedule, sid).next_fire_at = down_since
        db.session.commit()
    processes.start("scheduler", "scheduler.py", SCHEDULE_MISFIRE_GRACE="1")

    def fires(sid):
        return rows(
            app,
            sa.select(ScheduleFire.fire_at, ScheduleFire.outcome, ScheduleFire.job_id).where(
                ScheduleFire.schedule_id == sid
            ),
        )

    wait_for(lambda: fires(skip) and fires(make_up), timeout=30, message="the catch-up pass")
    [(at, outcome, job_id)] = fires(make_up)
    assert (at, outcome) == (latest, "created")
    [(scheduled_for,)] = rows(app, sa.select(Job.scheduled_for).where(Job.id == job_id))
    assert scheduled_for > latest  # made up now, once
    [(at, outcome, job_id)] = fires(skip)
    assert (at, outcome, job_id) == (latest, "skipped", None)
    assert rows(app, sa.select(Job.id).where(Job.schedule_id == skip)) == []
    nexts = rows(app, sa.select(Schedule.next_fire_at).where(Schedule.id.in_([skip, make_up])))
    assert {n for (n,) in nexts} == {latest + timedelta(minutes=1)}
    # A second restart makes up nothing more.
    processes.kill("scheduler", signal.SIGKILL)
    processes.start("scheduler-2", "scheduler.py", SCHEDULE_MISFIRE_GRACE="1")
    time.sleep(3)
    assert len(fires(make_up)) in (1, 2)  # 2 only if the next minute already came, on time
    assert len(rows(app, sa.select(Job.id).where(Job.schedule_id == make_up))) == len(
        fires(make_up)
    )
