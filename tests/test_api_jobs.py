"""Success paths of every job route, and what Redis holds after each call."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dispatched.clock import parse_iso
from dispatched.transport_rq import DUE_KEY, SCHEDULED_KEY
from tests.support import due_now, handed_over, wakes

SCHEDULED = SCHEDULED_KEY
QUEUE = "rq:queue:dispatched"


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def dispatch(client, team, body=None, **kwargs):
    body = body if body is not None else {"payload": {"hello": "world"}}
    return client.post("/api/jobs/dispatch", json=body, headers=team.headers, **kwargs)


def queued_ids(redis) -> list[str]:
    return [x.decode() for x in redis.lrange(QUEUE, 0, -1)]


def scheduled(redis) -> dict[str, float]:
    return {k.decode(): v for k, v in redis.zrange(SCHEDULED, 0, -1, withscores=True)}


def test_dispatch_now_asks_a_worker_to_pull_it_and_the_worker_starts_attempt_one(
    app, client, team, redis, pull_pass
):
    before = datetime.now(UTC)
    r = dispatch(client, team, {"payload": {"order": 42, "items": [1, 2]}, "maxRetries": 2})
    assert r.status_code == 201
    body = r.json
    assert set(body) == {"jobId", "status", "scheduledFor", "maxRetries", "createdAt"}
    assert body["jobId"].startswith("job_")
    assert body["status"] == "QUEUED"
    assert body["maxRetries"] == 2
    assert before - timedelta(seconds=1) <= parse_iso(body["scheduledFor"]) <= datetime.now(UTC)

    # Committed QUEUED and due; Redis: one pull of the project is queued for a worker (and its
    # mark set), the release loop is not woken, nothing is scheduled.
    job = client.get(f"/api/jobs/{body['jobId']}", headers=team.headers).json
    assert job["status"] == "QUEUED"
    assert parse_iso(job["nextAttemptAt"]) <= datetime.now(UTC)
    assert due_now(redis) == [[team.project_id]]
    assert redis.exists(DUE_KEY.format(team.project_id))
    assert wakes(redis) == [] and handed_over(redis) == [] and scheduled(redis) == {}

    # The worker that takes the pull releases and starts the attempt in its own threads.
    [delivery] = pull_pass()
    assert (delivery.job_id, delivery.attempt_number) == (body["jobId"], 1)
    assert delivery.payload == {"order": 42, "items": [1, 2]}
    assert due_now(redis) == [] and not redis.exists(DUE_KEY.format(team.project_id))
    assert wakes(redis) == [] and handed_over(redis) == []
    job = client.get(f"/api/jobs/{body['jobId']}", headers=team.headers).json
    assert job["status"] == "STARTED"
    assert job["attempts"] == 1 and job["lastError"] is None and job["completedAt"] is None

    from dispatched.extensions import db
    from dispatched.models import Job

    with app.app_context():
        assert db.session.get(Job, body["jobId"]).holder == "worker-under-test"


def test_a_pull_with_no_free_thread_leaves_the_job_to_the_release_loop(
    client, team, redis, pull_pass, release_pass
):
    job_id = dispatch(client, team, {"payload": {"n": 1}}).json["jobId"]
    assert pull_pass(room=0) == []
    assert client.get(f"/api/jobs/{job_id}", headers=team.headers).json["status"] == "QUEUED"
    assert wakes(redis) == [team.project_id]
    # One pass of the release loop: released under flow control, one hand-over RQ job.
    release_pass()
    assert wakes(redis) == []
    [(holder, attempts)] = handed_over(redis)
    assert holder is not None and attempts == [[job_id, 1]]
    job = client.get(f"/api/jobs/{job_id}", headers=team.headers).json
    assert job["status"] == "DISPATCHED" and job["attempts"] == 0


def test_dispatch_later_registers_with_scheduler_at_its_exact_time(client, team, redis):
    when = datetime.now(UTC) + timedelta(minutes=10, milliseconds=300)
    r = dispatch(client, team, {"payload": {}, "scheduleFor": iso(when)})
    assert r.status_code == 201
    job_id = r.json["jobId"]
    assert abs(parse_iso(r.json["scheduledFor"]) - when) < timedelta(milliseconds=2)

    assert queued_ids(redis) == []
    # The exact time (not rq-scheduler's whole second): released at it, never before.
    assert list(scheduled(redis)) == [f"{job_id}-1"]
    assert scheduled(redis)[f"{job_id}-1"] == pytest.approx(when.timestamp(), abs=0.002)
    job = client.get(f"/api/jobs/{job_id}", headers=team.headers).json
    assert job["status"] == "QUEUED"
    assert parse_iso(job["nextAttemptAt"]) == parse_iso(job["scheduledFor"])


def test_scheduled_for_alias_and_offsets(client, team, redis):
    when = datetime.now(UTC) + timedelta(hours=2)
    offset = when.astimezone(datetime.now().astimezone().tzinfo).isoformat()
    r = dispatch(client, team, {"payload": {}, "scheduledFor": when.strftime("%Y-%m-%dT%H:%M:%S")})
    assert r.status_code == 201, r.json
    # A naive time is UTC.
    assert parse_iso(r.json["scheduledFor"]) == when.replace(microsecond=0)
    r = dispatch(client, team, {"payload": {}, "scheduleFor": offset})
    assert r.status_code == 201
    assert abs(parse_iso(r.json["scheduledFor"]) - when) < timedelta(milliseconds=1)
    r = dispatch(client, team, {"payload": {}, "scheduleFor": "2026-01-01T10:00:00+05:30"})
    assert r.status_code == 201  # past → now
    assert parse_iso(r.json["scheduledFor"]) > datetime(2026, 1, 1, 4, 30, tzinfo=UTC)
    assert due_now(redis) == [[team.project_id]] and len(scheduled(redis)) == 2


def test_max_retries_defaults_to_and_is_capped_by_plan(client, make_team):
    free, scale = make_team("free"), make_team("scale")
    assert dispatch(client, free).json["maxRetries"] == 3
    assert dispatch(client, free, {"payload": {}, "maxRetries": 50}).json["maxRetries"] == 3
    assert dispatch(client, free, {"payload": {}, "maxRetries": 0}).json["maxRetries"] == 0
    assert dispatch(client, scale, {"payload": {}, "maxRetries": 50}).json["maxRetries"] == 10
    assert dispatch(client, scale, {"payload": {}}).json["maxRetries"] == 10


def test_get_list_and_paging(client, team, pull_pass, release_pass):
    ids = [dispatch(client, team, {"payload": {"n": n}}).json["jobId"] for n in range(5)]
    pull_pass(room=0)  # no worker has a free thread: the release loop hands them over
    release_pass()
    page = client.get("/api/jobs?limit=2", headers=team.headers).json
    seen = [j["jobId"] for j in page["jobs"]]
    while page["nextCursor"]:
        page = client.get(
            f"/api/jobs?limit=2&cursor={page['nextCursor']}", headers=team.headers
        ).json
        seen += [j["jobId"] for j in page["jobs"]]
    assert seen == list(reversed(ids))  # newest first, each once
    dispatched = client.get("/api/jobs?status=DISPATCHED", headers=team.headers).json
    assert len(dispatched["jobs"]) == 5 and dispatched["nextCursor"] is None
    assert client.get("/api/jobs?status=queued", headers=team.headers).json["jobs"] == []


def test_cancel_queued_job_removes_it_from_redis(client, team, redis):
    when = datetime.now(UTC) + timedelta(hours=1)
    job_id = dispatch(client, team, {"payload": {}, "scheduleFor": iso(when)}).json["jobId"]
    assert f"{job_id}-1" in scheduled(redis)

    r = client.delete(f"/api/jobs/{job_id}", headers=team.headers)
    assert r.status_code == 200
    assert r.json == {"jobId": job_id, "status": "CANCELLED"}
    assert scheduled(redis) == {} and queued_ids(redis) == []
    assert not redis.exists(f"rq:job:{job_id}-1")
    job = client.get(f"/api/jobs/{job_id}", headers=team.headers).json
    assert job["status"] == "CANCELLED" and job["cancelledAt"] and job["nextAttemptAt"] is None

    again = client.delete(f"/api/jobs/{job_id}", headers=team.headers)
    assert again.status_code == 409
    assert again.json["error"] == "CONFLICT"
    assert again.json["data"]["message"] == "Job is not in QUEUED status"


def test_cancel_dispatched_job_conflicts(client, team, redis, pull_pass, release_pass):
    job_id = dispatch(client, team).json["jobId"]
    pull_pass(room=0)  # no worker has a free thread: the release loop hands it over
    release_pass()
    before = handed_over(redis)
    r = client.delete(f"/api/jobs/{job_id}", headers=team.headers)
    assert r.status_code == 409 and r.json["data"]["status"] == "DISPATCHED"
    assert handed_over(redis) == before and before[0][1] == [[job_id, 1]]  # untouched


def test_patch_moves_the_scheduled_attempt(client, team, redis):
    first = datetime.now(UTC) + timedelta(hours=1)
    job_id = dispatch(client, team, {"payload": {}, "scheduleFor": iso(first)}).json["jobId"]
    later = first + timedelta(hours=3, milliseconds=500)
    r = client.patch(f"/api/jobs/{job_id}", json={"scheduledFor": iso(later)}, headers=team.headers)
    assert r.status_code == 200, r.json
    assert r.json["status"] == "QUEUED"
    assert abs(parse_iso(r.json["scheduledFor"]) - later) < timedelta(milliseconds=2)
    assert list(scheduled(redis)) == [f"{job_id}-1"]
    assert scheduled(redis)[f"{job_id}-1"] == pytest.approx(later.timestamp(), abs=0.002)
    assert queued_ids(redis) == []


def test_patch_null_dispatches_now(client, team, redis, release_pass):
    when = datetime.now(UTC) + timedelta(hours=1)
    job_id = dispatch(client, team, {"payload": {}, "scheduleFor": iso(when)}).json["jobId"]
    r = client.patch(f"/api/jobs/{job_id}", json={"scheduledFor": None}, headers=team.headers)
    assert r.status_code == 200
    assert r.json["status"] == "QUEUED"
    assert parse_iso(r.json["scheduledFor"]) <= datetime.now(UTC)
    assert parse_iso(r.json["nextAttemptAt"]) <= datetime.now(UTC)
    assert scheduled(redis) == {}
    assert wakes(redis) == [team.project_id]
    release_pass()
    assert [attempts for _, attempts in handed_over(redis)] == [[[job_id, 1]]]
    # Not QUEUED any more: neither PATCH nor cancel applies.
    r = client.patch(f"/api/jobs/{job_id}", json={"scheduledFor": None}, headers=team.headers)
    assert r.status_code == 409 and r.json["error"] == "CONFLICT"


def test_attempts_of_new_job_is_empty(client, team):
    job_id = dispatch(client, team).json["jobId"]
    r = client.get(f"/api/jobs/{job_id}/attempts", headers=team.headers)
    assert r.status_code == 200
    assert r.json == {"jobId": job_id, "attempts": []}


def test_replay_only_failed_jobs(app, client, team, redis, release_pass):
    job_id = dispatch(client, team).json["jobId"]
    r = client.post(f"/api/jobs/{job_id}/replay", headers=team.headers)
    assert r.status_code == 409 and r.json["data"]["message"] == "Job is not in FAILED status"

    # Make it FAILED after 4 attempts, the way the delivery task leaves it.
    from dispatched.extensions import db
    from dispatched.models import Job

    with app.app_context():
        job = db.session.get(Job, job_id)
        job.status, job.attempts, job.last_error = "FAILED", 4, "HTTP 500"
        db.session.commit()
    redis.flushdb()
    r = client.post(f"/api/jobs/{job_id}/replay", headers=team.headers)
    assert r.status_code == 200, r.json
    assert r.json["status"] == "QUEUED"
    assert r.json["attempts"] == 4
    # Attempt numbers keep counting: the replay's first attempt is number 5.
    release_pass()
    assert [attempts for _, attempts in handed_over(redis)] == [[[job_id, 5]]]
    with app.app_context():
        assert db.session.get(Job, job_id).retry_base == 4


def test_usage_counts_jobs_this_month(client, team):
    for _ in range(3):
        dispatch(client, team)
    r = client.get("/api/usage", headers=team.headers)
    assert r.status_code == 200
    body = r.json
    assert body["plan"] == "free" and body["jobsThisMonth"] == 3 and body["limit"] == 1000
    assert body["rateLimit"] == {"requestsPerMinute": 60}
    assert 1 <= body["daysUntilReset"] <= 31


def test_payload_roundtrips_unicode_and_order(client, team):
    payload = {"z": 1, "a": "héllo ✓ 🚀", "nested": {"list": [None, True, 1.5, "x"]}}
    job_id = dispatch(client, team, {"payload": payload}).json["jobId"]
    r = client.get(f"/api/jobs/{job_id}", headers=team.headers)
    assert r.json["payload"] == payload
    assert list(r.json["payload"]) == ["z", "a", "nested"]


def test_idempotent_repeat_returns_same_job(client, team, redis):
    headers = {**team.headers, "Idempotency-Key": "order-42"}
    first = client.post("/api/jobs/dispatch", json={"payload": {"n": 1}}, headers=headers)
    second = client.post("/api/jobs/dispatch", json={"payload": {"n": 2}}, headers=headers)
    assert first.status_code == 201 and second.status_code == 200
    assert second.json["jobId"] == first.json["jobId"]
    assert due_now(redis) == [[team.project_id]]
    assert client.get("/api/usage", headers=team.headers).json["jobsThisMonth"] == 1
    other = client.post(
        "/api/jobs/dispatch", json={"payload": {}}, headers={**team.headers, "Idempotency-Key": "x"}
    )
    assert other.status_code == 201 and other.json["jobId"] != first.json["jobId"]


def test_idempotency_key_is_per_project_and_expires(app, client, make_team):
    a, b = make_team(), make_team()
    key = {"Idempotency-Key": "same"}
    ja = client.post("/api/jobs/dispatch", json={"payload": {}}, headers={**a.headers, **key})
    jb = client.post("/api/jobs/dispatch", json={"payload": {}}, headers={**b.headers, **key})
    assert ja.status_code == jb.status_code == 201 and ja.json["jobId"] != jb.json["jobId"]

    from dispatched.extensions import db
    from dispatched.models import Job

    with app.app_context():
        job = db.session.get(Job, ja.json["jobId"])
        job.created_at = job.created_at - timedelta(hours=25)
        db.session.commit()
    again = client.post("/api/jobs/dispatch", json={"payload": {}}, headers={**a.headers, **key})
    assert again.status_code == 201 and again.json["jobId"] != ja.json["jobId"]
