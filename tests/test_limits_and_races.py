"""Per-team rate limits, the monthly quota, and races that must have exactly one winner."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import requests

from dispatched.extensions import db
from dispatched.models import Job
from dispatched.transport_rq import SCHEDULED_KEY
from tests.support import handed_over


def dispatch(client, team, **body):
    return client.post("/api/jobs/dispatch", json={"payload": {}, **body}, headers=team.headers)


def test_rate_limit_after_plan_count(client, make_team):
    team = make_team("tiny_rate")  # 5 requests per minute
    for i in range(5):
        r = client.get("/api/usage", headers=team.headers)
        assert r.status_code == 200
        assert r.headers["X-RateLimit-Limit"] == "5"
        assert r.headers["X-RateLimit-Remaining"] == str(4 - i)
        assert "Retry-After" not in r.headers
    r = dispatch(client, team)
    assert r.status_code == 429
    assert r.json["error"] == "RATE_LIMITED"
    assert "5 per 1 minute" in r.json["data"]["message"]
    assert r.headers["X-RateLimit-Remaining"] == "0"
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    assert int(r.headers["X-RateLimit-Reset"]) > datetime.now(UTC).timestamp()


def test_rate_limit_is_shared_by_the_teams_keys_not_other_teams(app, client, make_team):
    from dispatched import keys
    from dispatched.models import Project

    team = make_team("tiny_rate")
    with app.app_context():
        _, second_token = keys.create_key(db.session.get(Project, team.project_id), "second")
        db.session.commit()
    second = {"Authorization": f"Bearer {second_token}"}
    for headers in [team.headers, second, team.headers, second, team.headers]:
        assert client.get("/api/jobs", headers=headers).status_code == 200
    assert client.get("/api/jobs", headers=second).status_code == 429
    other = make_team("tiny_rate")
    assert client.get("/api/jobs", headers=other.headers).status_code == 200


def test_quota_reached_and_cancelled_jobs_count(client, make_team):
    team = make_team("tiny_quota")  # 10 jobs a month
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    ids = [dispatch(client, team, scheduleFor=later).json["jobId"] for _ in range(10)]
    for job_id in ids[:4]:
        assert client.delete(f"/api/jobs/{job_id}", headers=team.headers).status_code == 200
    r = dispatch(client, team)
    assert r.status_code == 429
    assert r.json["error"] == "LIMIT_REACHED"
    assert r.json["data"]["limit"] == 10 and r.json["data"]["plan"] == "tiny_quota"
    assert int(r.headers["Retry-After"]) > 0
    usage = client.get("/api/usage", headers=team.headers).json
    assert usage["jobsThisMonth"] == 10 and usage["limit"] == 10
    # An idempotent repeat of an existing job is not a new job: still answered.
    other_team = make_team("tiny_quota")
    assert dispatch(client, other_team).status_code == 201


def test_quota_counts_per_month(app, make_team):
    from dispatched import plans, usage

    team = make_team("tiny_quota")
    with app.app_context():
        plan = plans.get("tiny_quota")
        november = datetime(2026, 11, 30, 23, 59, tzinfo=UTC)
        for _ in range(10):
            usage.consume(team.team_id, plan, november)
        db.session.commit()
        december = datetime(2026, 12, 1, 0, 0, 1, tzinfo=UTC)
        usage.consume(team.team_id, plan, december)  # a new month starts at zero
        db.session.commit()
        assert usage.jobs_this_month(team.team_id, november) == 10
        assert usage.jobs_this_month(team.team_id, december) == 1


def test_concurrent_dispatches_never_exceed_quota(app, live_server, make_team):
    team = make_team("tiny_quota")
    barrier = threading.Barrier(20)

    def one(_: int) -> int:
        barrier.wait()
        return requests.post(
            f"{live_server}/api/jobs/dispatch",
            json={"payload": {}},
            headers=team.headers,
            timeout=30,
        ).status_code

    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(one, range(20)))
    assert sorted(statuses) == [201] * 10 + [429] * 10
    with app.app_context():
        assert db.session.query(Job).count() == 10


def test_concurrent_idempotent_dispatches_create_one_job(app, live_server, make_team):
    team = make_team("unlimited")
    barrier = threading.Barrier(10)

    def one(_: int) -> tuple[int, str]:
        barrier.wait()
        r = requests.post(
            f"{live_server}/api/jobs/dispatch",
            json={"payload": {}},
            headers={**team.headers, "Idempotency-Key": "once"},
            timeout=30,
        )
        return r.status_code, r.json()["jobId"]

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(one, range(10)))
    assert sorted(s for s, _ in results) == [200] * 9 + [201]
    assert len({job_id for _, job_id in results}) == 1
    with app.app_context():
        assert db.session.query(Job).count() == 1


def _race(live_server, team, job_id, actions) -> list[int]:
    barrier = threading.Barrier(len(actions))

    def run(action: str) -> int:
        barrier.wait()
        url = f"{live_server}/api/jobs/{job_id}"
        if action == "cancel":
            return requests.delete(url, headers=team.headers, timeout=30).status_code
        return requests.patch(
            url, json={"scheduledFor": None}, headers=team.headers, timeout=30
        ).status_code

    with ThreadPoolExecutor(len(actions)) as pool:
        return list(pool.map(run, actions))


def test_cancel_and_patch_race_has_one_cancel(
    app, client, live_server, make_team, redis, release_pass
):
    """PATCH to now keeps a job QUEUED (due, waiting for the release loop), so it may still be
    cancelled: exactly one cancel wins, and a cancelled job is never handed over."""
    team = make_team("unlimited")
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    for _ in range(5):
        job_id = dispatch(client, team, scheduleFor=later).json["jobId"]
        statuses = _race(live_server, team, job_id, ["cancel", "patch"] * 4)
        cancels, patches = statuses[0::2], statuses[1::2]
        assert cancels.count(200) == 1 and cancels.count(409) == 3, statuses
        assert set(patches) <= {200, 409}, statuses
        with app.app_context():
            assert db.session.get(Job, job_id).status == "CANCELLED"
        release_pass()
        assert handed_over(redis) == []
        assert redis.zscore(SCHEDULED_KEY, f"{job_id}-1") is None


def test_cancel_and_release_race_has_one_winner(app, client, live_server, make_team, redis):
    """The release loop (QUEUED → DISPATCHED) and cancels (QUEUED → CANCELLED) race on the same
    compare-and-set: one winner, and a cancelled job is never handed to a worker."""
    from dispatched import jobs, transport

    team = make_team("unlimited")

    def release(barrier: threading.Barrier) -> None:
        barrier.wait()
        with app.app_context():  # one pass of the release loop, as scheduler.py makes it
            tick = jobs.on_tick([], {team.project_id})
            transport.hand_over(tick.groups, 0)

    def cancel(barrier: threading.Barrier, job_id: str) -> int:
        barrier.wait()
        url = f"{live_server}/api/jobs/{job_id}"
        return requests.delete(url, headers=team.headers, timeout=30).status_code

    for _ in range(5):
        redis.flushdb()
        job_id = dispatch(client, team).json["jobId"]
        barrier = threading.Barrier(4)
        with ThreadPoolExecutor(4) as pool:
            releasing = pool.submit(release, barrier)
            statuses = list(pool.map(lambda _: cancel(barrier, job_id), range(3)))  # noqa: B023
            releasing.result()
        with app.app_context():
            final = db.session.get(Job, job_id).status
        handed = [ref for _, refs in handed_over(redis) for ref in refs]
        if final == "CANCELLED":
            assert statuses.count(200) == 1 and handed == []
        else:
            assert final == "DISPATCHED" and statuses == [409] * 3
            assert handed == [[job_id, 1]]


def test_double_cancel_has_one_winner(live_server, client, make_team):
    team = make_team("unlimited")
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    job_id = dispatch(client, team, scheduleFor=later).json["jobId"]
    statuses = _race(live_server, team, job_id, ["cancel"] * 6)
    assert sorted(statuses) == [200] + [409] * 5
