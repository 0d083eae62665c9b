"""POST /api/jobs/dispatch/batch (DESIGN.md §5, §10): every request-level and item-level rule
with its status and error code, quota and rate-limit accounting, idempotency, the hand-off to
Redis, and delivery of batch jobs by real worker/scheduler processes."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import requests
import sqlalchemy as sa
from redis import Redis

from dispatched import usage
from dispatched.extensions import db
from dispatched.models import Job
from tests.support import answer, due_now, wait_for

BATCH = "/api/jobs/dispatch/batch"
SCHEDULED_KEY = "rq:scheduler:scheduled_jobs"
WAKE_KEY = "dispatched:wake"


def later(**delta: float) -> str:
    return (datetime.now(UTC) + timedelta(**(delta or {"hours": 1}))).isoformat()


def post(client, team, body, **headers):
    return client.post(BATCH, json=body, headers={**team.headers, **headers})


def job_count(app) -> int:
    with app.app_context():
        return db.session.query(Job).count()


# --- a request that is itself invalid creates nothing -----------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "jobs is required"),
        ({"jobs": None}, "jobs must be an array, got NoneType"),
        ({"jobs": {"payload": {}}}, "jobs must be an array, got dict"),
        ({"jobs": "x"}, "jobs must be an array, got str"),
        ({"jobs": []}, "jobs must hold 1-100 items, got 0"),
        ({"jobs": [{"payload": {}}] * 101}, "jobs must hold 1-100 items, got 101"),
    ],
)
def test_invalid_request_is_400_and_creates_nothing(app, client, team, body, message):
    r = post(client, team, body)
    assert r.status_code == 400, r.json
    assert r.json["error"] == "BAD_REQUEST" and message in r.json["data"]["message"]
    assert r.json["data"]["field"] == "jobs"
    assert job_count(app) == 0


@pytest.mark.parametrize("raw", [b"[]", b'"jobs"', b"null", b"{not json", b""])
def test_body_not_a_json_object_is_400(app, client, team, raw):
    r = client.post(BATCH, data=raw, headers={**team.headers, "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json["error"] == "BAD_REQUEST"
    assert job_count(app) == 0


def test_wrong_content_type_is_415(client, team):
    r = client.post(BATCH, data=json.dumps({"jobs": [{"payload": {}}]}), headers=team.headers)
    assert r.status_code == 415 and r.json["error"] == "UNSUPPORTED_MEDIA_TYPE"


def test_missing_or_unknown_key_is_401(client):
    assert client.post(BATCH, json={"jobs": [{"payload": {}}]}).status_code == 401
    r = client.post(
        BATCH, json={"jobs": [{"payload": {}}]}, headers={"Authorization": "Bearer disp_k1_x"}
    )
    assert r.status_code == 401
    assert r.json == {"error": "UNAUTHORIZED", "data": {"message": "Unauthorized"}}


def test_body_over_1_mib_is_413_even_when_the_app_allows_more(app, client, make_team):
    team = make_team("unlimited")
    app.config["MAX_CONTENT_LENGTH"] = 8 * 1024 * 1024
    item = {"payload": {"blob": "x" * 9000}}
    body = json.dumps({"jobs": [item] * 100}).encode()  # ~900 KB: under the cap
    assert len(body) < 1024 * 1024
    ok = client.post(BATCH, data=body, headers={**team.headers, "Content-Type": "application/json"})
    assert ok.status_code == 200
    big = json.dumps({"jobs": [{"payload": {"blob": "x" * 11000}}] * 100}).encode()
    assert len(big) > 1024 * 1024
    r = client.post(BATCH, data=big, headers={**team.headers, "Content-Type": "application/json"})
    assert r.status_code == 413 and r.json["error"] == "PAYLOAD_TOO_LARGE"
    assert job_count(app) == 100  # only the first request's jobs
    # The single dispatch still follows MAX_CONTENT_LENGTH (and the plan's payload limit).
    assert (
        client.post(
            "/api/jobs/dispatch", json={"payload": {"k": 1}}, headers=team.headers
        ).status_code
        == 201
    )


# --- items: each on its own ------------------------------------------------------------------


def test_results_in_order_and_bad_items_never_sink_the_others(app, client, team, redis):
    items = [
        {"payload": {"n": 0}},
        "not an object",
        {"payload": {"n": 2}, "scheduleFor": later()},
        {},
        {"payload": [1, 2]},
        {"payload": {"n": 5}, "scheduleFor": "tomorrow"},
        {"payload": {"n": 6}, "scheduleFor": later(days=366)},
        {"payload": {"n": 7}, "maxRetries": True},
        {"payload": {"n": 8}, "maxRetries": -1},
        {"payload": {"n": 9}, "maxRetries": 1.5},
        {"payload": {"n": 10}, "scheduleFor": later(), "scheduledFor": later()},
        {"payload": {"big": "x" * 11_000}},
        {"payload": {"n": 12}, "idempotencyKey": 42},
        {"payload": {"n": 13}, "idempotencyKey": ""},
        {"payload": {"n": 14}, "idempotencyKey": "k" * 256},
        {"payload": {"n": 15}, "idempotencyKey": "tab\tkey"},
        {"payload": {"n": 16}, "scheduledFor": later(), "maxRetries": 99},
    ]
    r = post(client, team, {"jobs": items})
    assert r.status_code == 200
    results = r.json["results"]
    assert len(results) == len(items)
    errors = {i: (x["error"], x["data"]["message"]) for i, x in enumerate(results) if "error" in x}
    assert errors == {
        1: ("BAD_REQUEST", "each job must be a JSON object, got str"),
        3: ("BAD_REQUEST", "payload is required and must be a JSON object"),
        4: ("BAD_REQUEST", "payload must be a JSON object, got list"),
        5: ("BAD_REQUEST", errors[5][1]),
        6: ("BAD_REQUEST", errors[6][1]),
        7: ("BAD_REQUEST", "maxRetries must be an integer, got True"),
        8: ("BAD_REQUEST", "maxRetries must be 0 or more, got -1"),
        9: ("BAD_REQUEST", "maxRetries must be an integer, got 1.5"),
        10: ("BAD_REQUEST", "send either scheduleFor or scheduledFor, not both"),
        11: ("PAYLOAD_TOO_LARGE", errors[11][1]),
        12: ("BAD_REQUEST", "idempotencyKey must be a string, got 42"),
        13: ("BAD_REQUEST", "idempotencyKey must be 1-255 characters, got 0"),
        14: ("BAD_REQUEST", "idempotencyKey must be 1-255 characters, got 256"),
        15: ("BAD_REQUEST", "idempotencyKey must be printable ASCII"),
    }
    assert "tomorrow" in errors[5][1] and "more than 365 days" in errors[6][1]
    assert results[11]["data"]["limit"] == 10 * 1024 and results[11]["data"]["size"] > 11_000
    assert results[12]["data"]["field"] == "idempotencyKey"
    created = [results[i] for i in (0, 2, 16)]
    for job in created:
        assert job["status"] == "QUEUED" and job["deduplicated"] is False
        assert set(job) == {
            "jobId",
            "status",
            "scheduledFor",
            "maxRetries",
            "createdAt",
            "deduplicated",
        }
    assert created[2]["maxRetries"] == 3  # capped by the free plan
    with app.app_context():
        payloads = {
            j.id: j.payload for j in db.session.query(Job).order_by(Job.scheduled_for, Job.id)
        }
    assert payloads == {
        created[0]["jobId"]: {"n": 0},
        created[1]["jobId"]: {"n": 2},
        created[2]["jobId"]: {"n": 16},
    }
    # Each item is exactly what the single dispatch answers for the same body.
    single = client.post("/api/jobs/dispatch", json=items[7], headers=team.headers)
    assert single.status_code == 400 and single.json["data"]["message"] == errors[7][1]


def test_due_now_and_timed_items_are_handed_to_redis_in_one_pipeline(
    app, client, make_team, redis, monkeypatch
):
    from redis.client import Pipeline

    team = make_team("unlimited")
    when = datetime.now(UTC) + timedelta(minutes=5)
    items = [{"payload": {"i": i}, "scheduleFor": when.isoformat()} for i in range(50)]
    items += [{"payload": {"i": i}} for i in range(50, 100)]
    pipelines: list[list[str]] = []
    commands: list[str] = []
    real_execute = Pipeline.execute

    def counting_execute(self, *args, **kwargs):
        pipelines.append(sorted(str(c[0][0]) for c in self.command_stack))
        return real_execute(self, *args, **kwargs)

    real_command = Redis.execute_command

    def counting_command(self, *args, **kwargs):
        commands.append(str(args[0]))
        return real_command(self, *args, **kwargs)

    statements: list[str] = []
    with app.app_context():
        engine = db.engine

    def count_statement(conn, cursor, statement, *_):
        statements.append(statement.split()[0])

    sa.event.listen(engine, "before_cursor_execute", count_statement)
    monkeypatch.setattr(Pipeline, "execute", counting_execute)
    monkeypatch.setattr(Redis, "execute_command", counting_command)
    try:
        post(client, team, {"jobs": [{"payload": {}}]})  # the key is now cached
        pipelines.clear(), commands.clear(), statements.clear()
        r = post(client, team, {"jobs": items})
    finally:
        sa.event.remove(engine, "before_cursor_execute", count_statement)
    assert r.status_code == 200 and all("jobId" in x for x in r.json["results"])
    # One pipeline hands the 100 jobs over (the project's pull mark, ZADD of 50, the metrics
    # counter); the first post's pull is still pending, so no second round trip queues another.
    # The other Redis calls are the key-cache epoch and the rate limiter's.
    assert pipelines == [["HINCRBY", "SET", "ZADD"]]
    assert "ZADD" not in commands and "LPUSH" not in commands and "RPUSH" not in commands
    # One SQL statement counts the quota and inserts all 100 jobs (on SQLite: its steps in one
    # transaction, without the round trips that matter on PostgreSQL).
    if engine.dialect.name == "postgresql":
        assert statements == ["WITH"]
    else:
        assert statements == ["UPDATE", "INSERT"]
    ids = [x["jobId"] for x in r.json["results"]]
    assert redis.zcard(SCHEDULED_KEY) == 50
    for job_id in ids[:50]:
        assert redis.zscore(SCHEDULED_KEY, f"{job_id}-1") == pytest.approx(when.timestamp())
    assert due_now(redis) == [[team.project_id]]  # the one pull takes them all
    assert redis.llen(WAKE_KEY) == 0
    with app.app_context():
        rows = db.session.query(Job).filter(Job.id.in_(ids)).all()
        assert {j.status for j in rows} == {"QUEUED"} and not any(j.needs_handoff for j in rows)


def test_redis_down_the_batch_is_still_accepted_and_flagged_for_the_reconciler(
    app, client, make_team
):
    team = make_team("unlimited")
    real = app.extensions["dispatched.redis"]
    app.extensions["dispatched.redis"] = Redis.from_url(
        "redis://127.0.0.1:1/0", socket_connect_timeout=0.2
    )
    try:
        r = post(client, team, {"jobs": [{"payload": {}}, {"payload": {}, "scheduleFor": later()}]})
    finally:
        app.extensions["dispatched.redis"] = real
    assert r.status_code == 200
    ids = [x["jobId"] for x in r.json["results"]]
    with app.app_context():
        assert {j.needs_handoff for j in db.session.query(Job).filter(Job.id.in_(ids))} == {True}


# --- quota and rate limit --------------------------------------------------------------------


def test_items_beyond_the_quota_get_limit_reached_in_order(app, client, make_team):
    team = make_team("tiny_quota")  # 10 jobs a month
    assert client.post("/api/jobs/dispatch", json={"payload": {}}, headers=team.headers)
    items = [{"payload": {"i": i}} for i in range(6)]
    items.insert(2, {"payload": "bad"})  # an invalid item takes no quota
    first = post(client, team, {"jobs": items}).json["results"]
    assert ["jobId" in x for x in first] == [True, True, False, True, True, True, True]
    second = post(client, team, {"jobs": [{"payload": {"i": i}} for i in range(5)]})
    assert second.status_code == 200
    results = second.json["results"]
    assert ["jobId" in x for x in results] == [True, True, True, False, False]
    refused = results[3]
    assert refused["error"] == "LIMIT_REACHED"
    assert refused["data"]["limit"] == 10 and refused["data"]["plan"] == "tiny_quota"
    assert refused["data"]["resetsAt"].endswith("Z")
    assert "Monthly job limit reached" in refused["data"]["message"]
    third = post(client, team, {"jobs": [{"payload": {}}]})
    assert third.status_code == 200 and third.json["results"][0]["error"] == "LIMIT_REACHED"
    assert job_count(app) == 10
    assert client.get("/api/usage", headers=team.headers).json["jobsThisMonth"] == 10


def test_a_batch_counts_once_toward_the_rate_limit(client, make_team):
    team = make_team("tiny_rate")  # 5 requests a minute
    for _ in range(5):
        r = post(client, team, {"jobs": [{"payload": {}}] * 20})
        assert r.status_code == 200 and len(r.json["results"]) == 20
        assert r.headers["X-RateLimit-Limit"] == "5"
    r = post(client, team, {"jobs": [{"payload": {}}]})
    assert r.status_code == 429 and r.json["error"] == "RATE_LIMITED"
    assert "Retry-After" in r.headers


def test_concurrent_batches_never_exceed_the_quota(app, live_server, make_team):
    team = make_team("tiny_quota")
    barrier = threading.Barrier(6)

    def one(_: int) -> list[dict]:
        barrier.wait()
        return requests.post(
            f"{live_server}{BATCH}",
            json={"jobs": [{"payload": {}}] * 3},
            headers=team.headers,
            timeout=30,
        ).json()["results"]

    with ThreadPoolExecutor(6) as pool:
        results = [x for batch in pool.map(one, range(6)) for x in batch]
    assert sum("jobId" in x for x in results) == 10
    assert sum(x.get("error") == "LIMIT_REACHED" for x in results) == 8
    assert job_count(app) == 10
    with app.app_context():
        assert usage.jobs_this_month(team.team_id) == 10


def test_concurrent_single_and_batch_dispatches_on_an_unlimited_plan_count_every_job(
    app, live_server, make_team
):
    team = make_team("unlimited")
    barrier = threading.Barrier(12)

    def one(i: int) -> int:
        barrier.wait()
        if i % 2:
            r = requests.post(
                f"{live_server}{BATCH}",
                json={"jobs": [{"payload": {"i": i}}] * 10},
                headers=team.headers,
                timeout=30,
            )
            return sum("jobId" in x for x in r.json()["results"])
        r = requests.post(
            f"{live_server}/api/jobs/dispatch",
            json={"payload": {"i": i}},
            headers=team.headers,
            timeout=30,
        )
        return int(r.status_code == 201)

    with ThreadPoolExecutor(12) as pool:
        assert sum(pool.map(one, range(12))) == 66
    with app.app_context():
        assert usage.jobs_this_month(team.team_id) == 66 == db.session.query(Job).count()


# --- idempotency -----------------------------------------------------------------------------


def test_idempotency_key_seen_before_or_earlier_in_the_batch_returns_the_original(
    app, client, make_team
):
    team = make_team("tiny_quota")
    original = client.post(
        "/api/jobs/dispatch",
        json={"payload": {"v": 1}},
        headers={**team.headers, "Idempotency-Key": "order-1"},
    ).json
    items = [
        {"payload": {"v": 2}, "idempotencyKey": "order-1"},
        {"payload": {"v": 3}, "idempotencyKey": "order-2"},
        {"payload": {"v": 4}, "idempotencyKey": "order-2"},
        {"payload": {"v": 5}},
    ]
    results = post(client, team, {"jobs": items}).json["results"]
    assert results[0]["jobId"] == original["jobId"] and results[0]["deduplicated"] is True
    assert results[1]["deduplicated"] is False
    assert results[2]["jobId"] == results[1]["jobId"] and results[2]["deduplicated"] is True
    assert results[3]["deduplicated"] is False and results[3]["jobId"] != results[1]["jobId"]
    assert job_count(app) == 3
    assert client.get("/api/usage", headers=team.headers).json["jobsThisMonth"] == 3
    # "As it is now": a cancelled original is shown cancelled; a repeat costs no quota.
    client.delete(f"/api/jobs/{results[1]['jobId']}", headers=team.headers)
    again = post(client, team, {"jobs": [{"payload": {}, "idempotencyKey": "order-2"}]})
    assert again.json["results"][0]["status"] == "CANCELLED"
    assert again.json["results"][0]["deduplicated"] is True
    assert client.get("/api/usage", headers=team.headers).json["jobsThisMonth"] == 3
    # The header does not apply to batch: it neither dedupes nor fails the request.
    one = post(client, team, {"jobs": [{"payload": {}}]}, **{"Idempotency-Key": "hdr"})
    two = post(client, team, {"jobs": [{"payload": {}}]}, **{"Idempotency-Key": "hdr"})
    assert one.json["results"][0]["jobId"] != two.json["results"][0]["jobId"]


def test_a_repeat_of_an_item_refused_for_quota_is_refused_too(client, make_team):
    team = make_team("tiny_quota")
    post(client, team, {"jobs": [{"payload": {}}] * 9})
    items = [
        {"payload": {}, "idempotencyKey": "a"},
        {"payload": {}, "idempotencyKey": "b"},
        {"payload": {}, "idempotencyKey": "b"},
        {"payload": {}, "idempotencyKey": "a"},
    ]
    results = post(client, team, {"jobs": items}).json["results"]
    assert results[0]["deduplicated"] is False
    assert results[3]["jobId"] == results[0]["jobId"] and results[3]["deduplicated"] is True
    assert results[1]["error"] == results[2]["error"] == "LIMIT_REACHED"


def test_expired_idempotency_key_makes_a_new_job(app, client, make_team):
    team = make_team("unlimited")
    first = post(client, team, {"jobs": [{"payload": {}, "idempotencyKey": "k"}]})
    first_id = first.json["results"][0]["jobId"]
    with app.app_context():
        db.session.execute(
            sa.update(Job)
            .where(Job.id == first_id)
            .values(created_at=datetime.now(UTC) - timedelta(hours=25))
        )
        db.session.commit()
    second = post(client, team, {"jobs": [{"payload": {}, "idempotencyKey": "k"}]})
    result = second.json["results"][0]
    assert result["jobId"] != first_id and result["deduplicated"] is False
    with app.app_context():
        assert db.session.get(Job, first_id).idempotency_key is None


def test_concurrent_batches_with_the_same_keys_create_each_job_once(app, live_server, make_team):
    team = make_team("unlimited")
    barrier = threading.Barrier(8)
    items = [{"payload": {"i": i}, "idempotencyKey": f"key-{i}"} for i in range(20)]

    def one(_: int) -> list[str]:
        barrier.wait()
        r = requests.post(
            f"{live_server}{BATCH}", json={"jobs": items}, headers=team.headers, timeout=30
        )
        return [x["jobId"] for x in r.json()["results"]]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(8)))
    assert all(ids == answers[0] for ids in answers)
    assert job_count(app) == 20
    with app.app_context():
        assert usage.jobs_this_month(team.team_id) == 20


# --- end to end ------------------------------------------------------------------------------


@pytest.mark.slow
def test_batch_jobs_are_delivered_by_real_processes(
    app, live_server, make_team, receiver, delivery_stack
):
    team = make_team("e2e", webhook_url=receiver.on("/hook", answer(200)))
    soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    items = [{"payload": {"i": i}} for i in range(30)]
    items += [{"payload": {"i": i}, "scheduleFor": soon} for i in range(30, 40)]
    items.append({"payload": "invalid"})
    started = time.time()
    r = requests.post(
        f"{live_server}{BATCH}", json={"jobs": items}, headers=team.headers, timeout=30
    )
    assert r.status_code == 200
    assert r.json()["results"][-1]["error"] == "BAD_REQUEST"
    wait_for(lambda: len(receiver.received("/hook")) >= 40, timeout=60, message="40 deliveries")
    time.sleep(1)
    received = receiver.received("/hook")
    assert sorted(x.json["payload"]["i"] for x in received) == list(range(40))
    timed = [x for x in received if x.json["payload"]["i"] >= 30]
    assert min(x.at for x in timed) >= started + 1.5  # never before their time
