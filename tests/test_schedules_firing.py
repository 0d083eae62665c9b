"""Firing schedules (DESIGN.md §13) against the real DB and Redis, with a fake clock: exactly once
per fire time (also when two firers race), catchUp, paused/deleted, quota-skipped fires, the
DST rule through the firing path, and the scheduler pass that releases fired jobs at once."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from dispatched import schedules, transport
from dispatched.extensions import db
from dispatched.models import Job, MonthlyUsage, Schedule, ScheduleFire
from dispatched.transport_rq import SCHEDULED_KEY
from tests.support import handed_over


def create(client, team, **fields):
    body = {"cron": "* * * * *", "payload": {"n": 1}, **fields}
    r = client.post("/api/schedules", json=body, headers=team.headers)
    assert r.status_code == 201, r.json
    return r.json["scheduleId"]


def set_next(app, schedule_id, when, dst=None):
    """Point a schedule at a fire time (what its last fire or creation did, at a fake time)."""
    with app.app_context():
        schedule = db.session.get(Schedule, schedule_id)
        schedule.next_fire_at, schedule.next_fire_dst = when, dst
        db.session.commit()


def fire(app, now):
    with app.app_context():
        return schedules.fire_due(now)


def jobs_of(app, schedule_id):
    with app.app_context():
        rows = db.session.execute(
            sa.select(Job).where(Job.schedule_id == schedule_id).order_by(Job.scheduled_for)
        ).scalars()
        result = [(job.id, job.scheduled_for, job.status, job.max_retries) for job in rows]
        db.session.rollback()
        return result


def fires_of(app, schedule_id):
    with app.app_context():
        rows = db.session.execute(
            sa.select(ScheduleFire)
            .where(ScheduleFire.schedule_id == schedule_id)
            .order_by(ScheduleFire.fire_at)
        ).scalars()
        result = [(f.fire_at, f.outcome, f.job_id, f.reason, f.dst) for f in rows]
        db.session.rollback()
        return result


def next_fire(app, schedule_id):
    with app.app_context():
        value = db.session.get(Schedule, schedule_id).next_fire_at
        db.session.rollback()
        return value


T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def test_a_due_fire_creates_one_job_once(app, client, team):
    sid = create(client, team, maxRetries=1, payload={"report": 7})
    set_next(app, sid, T0)
    assert fire(app, T0 - timedelta(seconds=2)).created == 0  # not due, nor within the lead
    done = fire(app, T0 + timedelta(milliseconds=40))
    assert (done.created, done.skipped, done.projects) == (1, 0, {team.project_id})
    assert done.next_at == T0 + timedelta(minutes=1) - timedelta(seconds=1)  # less the lead
    [(job_id, scheduled_for, status, retries)] = jobs_of(app, sid)
    assert (scheduled_for, status, retries) == (T0, "QUEUED", 1)
    assert fires_of(app, sid) == [(T0, "created", job_id, None, None)]
    # Again at the same instant, and a restarted firer: nothing more.
    assert fire(app, T0 + timedelta(milliseconds=50)).created == 0
    assert len(jobs_of(app, sid)) == 1
    # The job is an ordinary job, linked to its schedule, with its payload.
    job = client.get(f"/api/jobs/{job_id}", headers=team.headers).json
    assert job["scheduleId"] == sid and job["payload"] == {"report": 7}
    listed = client.get(f"/api/schedules/{sid}/jobs", headers=team.headers).json
    assert [j["jobId"] for j in listed["jobs"]] == [job_id] and listed["nextCursor"] is None
    fires = client.get(f"/api/schedules/{sid}/fires", headers=team.headers).json["fires"]
    assert fires[0]["jobId"] == job_id and fires[0]["outcome"] == "created"
    schedule = client.get(f"/api/schedules/{sid}", headers=team.headers).json
    assert schedule["lastFireAt"] == "2026-06-01T12:00:00.000Z"
    assert schedule["nextFireAt"] == "2026-06-01T12:01:00.000Z"
    # Quota: one job counted, in the fire's month.
    with app.app_context():
        assert db.session.get(MonthlyUsage, (team.team_id, "2026-06")).jobs == 1


def test_every_minute_for_ten_minutes_of_fake_clock(app, client, team):
    sid = create(client, team)
    set_next(app, sid, T0)
    now = T0
    while now < T0 + timedelta(minutes=10):
        fire(app, now)
        now += timedelta(seconds=7)
    assert [at for _, at, _, _ in jobs_of(app, sid)] == [
        T0 + timedelta(minutes=m) for m in range(10)
    ]


def test_two_firers_racing_fire_each_time_once(app, client, make_team):
    teams = [make_team("unlimited") for _ in range(3)]
    ids = [create(client, team) for team in teams for _ in range(20)]
    for sid in ids:
        set_next(app, sid, T0)
    barrier = threading.Barrier(4)
    results, errors = [], []

    def firer():
        try:
            with app.app_context():
                barrier.wait(10)
                for step in range(4):
                    results.append(schedules.fire_due(T0 + timedelta(minutes=step), limit=7))
                    results.append(schedules.fire_due(T0 + timedelta(minutes=step), limit=500))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=firer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    for sid in ids:
        times = [at for _, at, _, _ in jobs_of(app, sid)]
        assert times == [T0 + timedelta(minutes=m) for m in range(4)], sid
    assert sum(r.created for r in results) == 60 * 4


def test_a_fire_recorded_elsewhere_is_not_fired_again(app, client, team):
    """The key itself: another process recorded this fire (its commit raced ours): the firer
    collides on (schedule, fire time), fires nothing and moves the schedule on; the other
    due schedules of the batch still fire."""
    sid, other = create(client, team), create(client, team)
    set_next(app, sid, T0)
    set_next(app, other, T0)
    with app.app_context():
        db.session.add(ScheduleFire(schedule_id=sid, fire_at=T0, outcome="created", job_id=None))
        db.session.commit()
    done = fire(app, T0 + timedelta(seconds=1))
    assert done.created == 1
    assert jobs_of(app, sid) == [] and len(jobs_of(app, other)) == 1
    assert next_fire(app, sid) == T0 + timedelta(minutes=1)
    fire(app, T0 + timedelta(minutes=1))
    assert [at for _, at, _, _ in jobs_of(app, sid)] == [T0 + timedelta(minutes=1)]


def test_paused_and_deleted_schedules_fire_nothing(app, client, team):
    paused, deleted, live = create(client, team), create(client, team), create(client, team)
    for sid in (paused, deleted, live):
        set_next(app, sid, T0)
    client.post(f"/api/schedules/{paused}/pause", headers=team.headers)
    client.delete(f"/api/schedules/{deleted}", headers=team.headers)
    for minutes in range(3):
        fire(app, T0 + timedelta(minutes=minutes, seconds=1))
    assert jobs_of(app, paused) == [] and jobs_of(app, deleted) == []
    assert len(jobs_of(app, live)) == 3
    # Resumed: from the next fire after now, nothing made up for the paused time.
    resumed = client.post(f"/api/schedules/{paused}/resume", headers=team.headers).json
    assert resumed["paused"] is False and resumed["nextFireAt"] is not None
    assert fires_of(app, paused) == []


def test_quota_spent_records_skipped_fires_with_the_reason(app, client, make_team):
    team = make_team("tiny_quota")  # 10 jobs a month, 5 schedules
    ids = [create(client, team) for _ in range(3)]
    with app.app_context():
        month = T0.strftime("%Y-%m")
        db.session.add(MonthlyUsage(team_id=team.team_id, month=month, jobs=9))
        db.session.commit()
    for sid in ids:
        set_next(app, sid, T0)
    done = fire(app, T0)
    assert (done.created, done.skipped) == (1, 2)
    records = [fires_of(app, sid)[0] for sid in ids]
    created = [r for r in records if r[1] == "created"]
    skipped = [r for r in records if r[1] == "skipped"]
    assert len(created) == 1 and len(skipped) == 2
    for _, _, job_id, reason, _ in skipped:
        assert job_id is None
        assert reason == (
            "LIMIT_REACHED: the monthly quota of 10 jobs on the tiny_quota plan is used up"
        )
    with app.app_context():
        assert db.session.get(MonthlyUsage, (team.team_id, month)).jobs == 10
    # The schedules moved on all the same.
    assert all(next_fire(app, sid) == T0 + timedelta(minutes=1) for sid in ids)
    shown = [
        fire
        for sid in ids
        for fire in client.get(f"/api/schedules/{sid}/fires", headers=team.headers).json["fires"]
    ]
    assert sorted(f["outcome"] for f in shown) == ["created", "skipped", "skipped"]


@pytest.mark.parametrize("catch_up", ["none", "latest"])
def test_fires_missed_while_down(app, client, team, catch_up):
    """The scheduler was down from 11:50 to 12:00:30 (grace 60 s): 12:00 is on time and fires
    under both policies; 11:50-11:59 were missed and are recorded as one skip."""
    sid = create(client, team, catchUp=catch_up)
    set_next(app, sid, T0 - timedelta(minutes=10))
    fire(app, T0 + timedelta(seconds=30))
    assert [at for _, at, _, _ in jobs_of(app, sid)] == [T0]
    [missed, on_time] = fires_of(app, sid)
    assert missed[0] == T0 - timedelta(minutes=10) and missed[1] == "skipped"
    assert "missed while no scheduler was running" in missed[3]
    assert on_time[:2] == (T0, "created")
    assert next_fire(app, sid) == T0 + timedelta(minutes=1)


def test_catch_up_none_skips_and_latest_makes_up_the_most_recent_once(app, client, team):
    hourly_none = create(client, team, cron="0 * * * *", catchUp="none")
    hourly_latest = create(client, team, cron="0 * * * *", catchUp="latest")
    for sid in (hourly_none, hourly_latest):
        set_next(app, sid, T0 - timedelta(hours=5))  # down since 07:00; now 12:20
    now = T0 + timedelta(minutes=20)
    fire(app, now)
    assert jobs_of(app, hourly_none) == []
    [(fire_at, outcome, _, reason, _)] = fires_of(app, hourly_none)
    assert (fire_at, outcome) == (T0, "skipped") and "catchUp is none" in reason
    [(job_id, scheduled_for, _, _)] = jobs_of(app, hourly_latest)
    assert scheduled_for == now  # made up now, for the 12:00 fire
    [(fire_at, outcome, fired_job, reason, _)] = fires_of(app, hourly_latest)
    assert (fire_at, outcome, fired_job) == (T0, "created", job_id)
    assert reason.startswith("catch-up: the latest missed fire")
    for sid in (hourly_none, hourly_latest):
        assert next_fire(app, sid) == T0 + timedelta(hours=1)
    # A restart right after: nothing more.
    fire(app, now + timedelta(seconds=5))
    assert len(jobs_of(app, hourly_latest)) == 1 and len(fires_of(app, hourly_none)) == 1


@pytest.mark.parametrize(
    ("zone", "start", "expected"),
    [
        (
            "America/New_York",
            datetime(2026, 3, 8, 6, 0, tzinfo=UTC),  # 01:00 EST; 02:00-02:59 do not exist
            [(6, 0), (6, 15), (6, 30), (6, 45), (7, 0, "shifted"), (7, 15), (7, 30)],
        ),
        (
            "America/New_York",
            datetime(2026, 11, 1, 5, 0, tzinfo=UTC),  # 01:00 EDT; 01:00-01:59 happen twice
            [
                (5, 0, "deduplicated"),
                (5, 15, "deduplicated"),
                (5, 30, "deduplicated"),
                (5, 45, "deduplicated"),
                (7, 0),
                (7, 15),
                (7, 30),
            ],
        ),
        (
            "Australia/Lord_Howe",
            datetime(2026, 10, 3, 14, 30, tzinfo=UTC),  # 01:00 +10:30; 02:00-02:29 skipped
            [(14, 30), (14, 45), (15, 0), (15, 15), (15, 30, "shifted"), (15, 45), (16, 0)],
        ),
    ],
)
def test_dst_rule_through_the_firing_path(app, client, team, zone, start, expected):
    """A fake clock stepping every 20 s through a transition night fires each expected time
    once, with its note recorded."""
    sid = create(client, team, cron="*/15 * * * *", timezone=zone)
    set_next(app, sid, start - timedelta(minutes=15))
    fire(app, start - timedelta(minutes=15))
    now = start
    while now <= start + timedelta(hours=2, minutes=40):
        fire(app, now)
        now += timedelta(seconds=20)
    got = [
        (at.hour, at.minute) + ((dst,) if dst else ())
        for at, outcome, _, _, dst in fires_of(app, sid)
        if outcome == "created" and start <= at
    ]
    assert got[: len(expected)] == expected
    times = [at for _, at, _, _ in jobs_of(app, sid)]
    assert len(times) == len(set(times))


def test_scheduler_pass_fires_and_releases_in_the_same_pass(app, client, team, redis):
    sid = create(client, team)
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    set_next(app, sid, now)
    with app.app_context():
        transport.run_scheduler(schedules.on_tick, 0.25, burst=True)
    [(job_id, _, status, _)] = jobs_of(app, sid)
    assert status == "DISPATCHED"
    [(holder, attempts)] = handed_over(redis)
    assert attempts == [[job_id, 1]]
    # The loop's next wake-up is the next fire time, less the lead (read by a second pass).
    with app.app_context():
        tick = schedules.on_tick([], set())
        lead = timedelta(seconds=app.config["SCHEDULE_FIRE_AHEAD"])
        assert tick.next_wake == next_fire(app, sid) - lead


def test_the_scheduler_process_looks_for_due_schedules_only_when_one_may_be_due(
    app, client, team, redis
):
    """``Ticker``: a release pass between two looks costs no schedule query; a schedule the
    API re-timed meanwhile is seen at the next look (``recheck``), and the learned next fire
    time triggers a look by itself."""
    sid = create(client, team)
    far = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    set_next(app, sid, far)
    ticker = schedules.Ticker(recheck=3600)
    with app.app_context():
        lead = timedelta(seconds=app.config["SCHEDULE_FIRE_AHEAD"])
        assert ticker([], set()).next_wake == far - lead  # the first pass looks
        set_next(app, sid, datetime.now(UTC) - timedelta(seconds=1))  # due now, "by the API"
        assert ticker([], set()).next_wake == far - lead  # no look yet: nothing fired
        assert jobs_of(app, sid) == []
        ticker.recheck = 0  # the recheck interval has passed
        ticker([], set())
        assert len(jobs_of(app, sid)) == 1
        # A next fire time learned by a look triggers the look at that time on its own.
        soon = datetime.now(UTC) + lead + timedelta(seconds=2)  # margin for a slow machine
        set_next(app, sid, soon)
        assert ticker([], set()).next_wake == soon - lead  # looked (recheck 0): not due yet
        assert len(jobs_of(app, sid)) == 1
        ticker.recheck = 3600
        time.sleep(max(0.0, (soon - lead - datetime.now(UTC)).total_seconds()) + 0.05)
        ticker([], set())
        assert len(jobs_of(app, sid)) == 2


def test_a_fire_within_the_lead_is_created_ahead_and_scheduled_for_its_time(
    app, client, team, redis
):
    """The job of a fire 0.8 s away exists before its time, scheduled for it in the
    transport (so it is released at the fire time, not later); pausing the schedule before
    the fire time cancels it: a paused schedule fires nothing."""
    sid, other = create(client, team), create(client, team)
    fire_at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=30)
    for schedule_id in (sid, other):
        set_next(app, schedule_id, fire_at)
    with app.app_context():
        done = schedules.fire_due(fire_at - timedelta(milliseconds=800))
    assert (done.created, done.ahead, done.projects) == (2, 2, set())
    [(job_id, scheduled_for, status, _)] = jobs_of(app, sid)
    assert (scheduled_for, status) == (fire_at, "QUEUED")
    assert redis.zscore(SCHEDULED_KEY, f"{job_id}-1") == fire_at.timestamp()
    client.post(f"/api/schedules/{sid}/pause", headers=team.headers)
    assert jobs_of(app, sid)[0][2] == "CANCELLED"
    assert redis.zscore(SCHEDULED_KEY, f"{job_id}-1") is None
    # Deleting or re-timing does the same; a fire whose time came stays.
    [(other_job, *_)] = jobs_of(app, other)
    client.patch(f"/api/schedules/{other}", json={"cron": "0 * * * *"}, headers=team.headers)
    assert jobs_of(app, other)[0][2] == "CANCELLED"
