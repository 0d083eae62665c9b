"""Callbacks (DESIGN.md §11): validation at dispatch, what GET job shows, and delivery by the
engine (in-process workers here; real worker/scheduler processes in test_callbacks_e2e.py).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook

from dispatched import callbacks, job_input, jobs, reconciler
from dispatched.errors import BadRequest
from dispatched.extensions import db
from dispatched.models import Callback, Job
from tests.support import answer
from tests.test_secrets_and_defaults import deliver_released, other_app

PUBLIC = "https://93.184.216.34/callback"  # an IP literal: no DNS needed to judge it public


def dispatch(client, team, **fields):
    return client.post(
        "/api/jobs/dispatch", headers=team.headers, json={"payload": {"n": 1}, **fields}
    )


def next_callback_attempt(app, job_id):
    """When the job's (single) callback is due again; None once it is delivered or failed."""
    with app.app_context():
        [due] = db.session.execute(
            sa.select(Callback.next_attempt_at).where(Callback.job_id == job_id)
        ).scalars()
        db.session.rollback()
        return due


def get_job(client, team, job_id):
    return client.get(f"/api/jobs/{job_id}", headers=team.headers).json


def callback_rows(app, job_id):
    with app.app_context():
        rows = db.session.execute(
            sa.select(Callback).where(Callback.job_id == job_id).order_by(Callback.created_at)
        ).scalars()
        result = [
            {
                "kind": c.kind,
                "state": c.state,
                "attempts": c.attempts,
                "http_status": c.http_status,
                "last_error": c.last_error,
            }
            for c in rows
        ]
        db.session.rollback()
        return result


# --- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["callback", "failureCallback"])
@pytest.mark.parametrize(
    ("value", "message"),
    [
        (123, "must be a non-empty string, got 123"),
        (True, "must be a non-empty string, got True"),
        ({"url": PUBLIC}, "must be a non-empty string"),
        ("", "must be a non-empty string, got ''"),
        ("   ", "must be a non-empty string"),
        ("ftp://example.com/cb", "must be an http(s) URL with a host, got 'ftp://example.com/cb'"),
        ("https://", "must be an http(s) URL with a host"),
        ("example.com/cb", "must be an http(s) URL with a host"),
        ("https://user:pw@example.com/cb", "must not contain credentials"),
        ("https://example.com:99999/cb", "is not a valid URL"),
        ("https://example.com/a b", "contains spaces or control characters"),
        ("https://example.com/\x00", "contains spaces or control characters"),
        ("https://example.com/" + "a" * 2048, "is longer than 2048 characters"),
    ],
)
def test_invalid_callback_urls_are_400_naming_the_field(client, team, field, value, message):
    r = dispatch(client, team, **{field: value})
    assert r.status_code == 400, r.json
    assert r.json["error"] == "BAD_REQUEST"
    assert r.json["data"]["field"] == field
    assert message in r.json["data"]["message"]
    assert r.json["data"]["message"].startswith(f"{field} URL")
    assert client.get("/api/jobs", headers=team.headers).json["jobs"] == []  # nothing created


@pytest.mark.parametrize("field", ["callback", "failureCallback"])
def test_http_callbacks_are_refused_in_production(database_url, redis_url, make_team, field):
    with other_app(database_url, redis_url, ENV="production") as prod:
        team = make_team("free")
        client = prod.test_client()
        r = dispatch(client, team, **{field: "http://93.184.216.34/cb"})
        assert r.status_code == 400 and r.json["error"] == "BAD_REQUEST"
        assert "is not https://" in r.json["data"]["message"]
        assert "ALLOW_HTTP_WEBHOOKS=1" in r.json["data"]["message"]
        assert dispatch(client, team, **{field: PUBLIC}).status_code == 201
    with other_app(database_url, redis_url, ENV="production", ALLOW_HTTP_WEBHOOKS=True) as app:
        r = dispatch(app.test_client(), team, **{field: "http://93.184.216.34/cb"})
        assert r.status_code == 201


@pytest.mark.parametrize("field", ["callback", "failureCallback"])
@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/cb",
        "https://10.1.2.3/cb",
        "https://192.168.0.10/cb",
        "https://169.254.169.254/latest/meta-data",
        "https://100.64.0.1/cb",
        "https://[::1]/cb",
        "https://0.0.0.0/cb",
    ],
)
def test_private_callback_addresses_are_refused_ssrf(
    database_url, redis_url, make_team, field, url
):
    with other_app(database_url, redis_url, ALLOW_PRIVATE_WEBHOOKS=False) as app:
        team = make_team("free")
        r = dispatch(app.test_client(), team, **{field: url})
        assert r.status_code == 400 and r.json["error"] == "BAD_REQUEST", r.json
        assert r.json["data"]["field"] == field
        assert "private, loopback or link-local" in r.json["data"]["message"]
        assert dispatch(app.test_client(), team, **{field: PUBLIC}).status_code == 201


def test_unresolvable_callback_host_is_refused_when_private_ones_are(
    database_url, redis_url, make_team
):
    with other_app(database_url, redis_url, ALLOW_PRIVATE_WEBHOOKS=False) as app:
        team = make_team("free")
        r = dispatch(app.test_client(), team, callback="https://no-such-host.invalid/cb")
        assert r.status_code == 400 and "does not resolve" in r.json["data"]["message"]


def test_callbacks_are_stored_and_shown_on_the_job(client, team):
    r = dispatch(client, team, callback=PUBLIC, failureCallback="https://93.184.216.34/failed")
    assert r.status_code == 201
    # The dispatch answer keeps its Dispatched-compatible shape.
    assert set(r.json) == {"jobId", "status", "scheduledFor", "maxRetries", "createdAt"}
    job = get_job(client, team, r.json["jobId"])
    assert job["callback"] == PUBLIC
    assert job["failureCallback"] == "https://93.184.216.34/failed"
    assert job["callbackStatus"] is None
    listed = client.get("/api/jobs", headers=team.headers).json["jobs"][0]
    assert listed["callback"] == PUBLIC and listed["callbackStatus"] is None


def test_no_callback_and_null_callbacks_mean_none(client, team):
    plain = get_job(client, team, dispatch(client, team).json["jobId"])
    assert (plain["callback"], plain["failureCallback"], plain["callbackStatus"]) == (
        None,
        None,
        None,
    )
    nulls = dispatch(client, team, callback=None, failureCallback=None)
    assert nulls.status_code == 201
    assert get_job(client, team, nulls.json["jobId"])["callback"] is None


def test_callback_url_is_trimmed(client, team):
    r = dispatch(client, team, callback=f"  {PUBLIC}  ")
    assert get_job(client, team, r.json["jobId"])["callback"] == PUBLIC


def test_parse_callbacks_is_the_validation_batch_items_share(app):
    with app.app_context():
        assert job_input.parse_callbacks({"payload": {}}) == (None, None)
        assert job_input.parse_callbacks({"callback": PUBLIC, "failureCallback": None}) == (
            PUBLIC,
            None,
        )
        with pytest.raises(BadRequest) as caught:
            job_input.parse_callbacks({"callback": PUBLIC, "failureCallback": "nope"})
        assert caught.value.data == {"field": "failureCallback"}


def test_the_webhook_url_rules_did_not_change_for_webhooks(app):
    from dispatched import webhooks

    with app.app_context():
        with pytest.raises(BadRequest, match="^webhook URL must be an http") as caught:
            webhooks.validate_url("ftp://x")
        assert caught.value.data == {}  # no field for the dashboard's form


# --- delivery by the engine (in-process worker) --------------------------------------------------


def run_worker(app, redis, release_pass):
    release_pass()
    deliver_released(app, redis)


def test_completed_job_calls_its_callback_signed_with_status_and_body(
    app, client, make_team, receiver, redis, release_pass
):
    receiver.on("/hook", lambda n: (201, {}, b'{"created": "order-7"}', 0.0))
    team = make_team("e2e", webhook_url=receiver.url("/hook"))
    callback_url = receiver.on("/done", answer(200))
    job_id = dispatch(
        client, team, callback=callback_url, failureCallback=receiver.url("/failed")
    ).json["jobId"]
    run_worker(app, redis, release_pass)

    [request] = receiver.received("/done")
    assert request.json == {
        "type": "job.completed",
        "jobId": job_id,
        "attemptNumber": 1,
        "status": 201,
        "body": '{"created": "order-7"}',
    }
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert headers["webhook-id"] == f"{job_id}:completed"
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"].startswith("Dispatched/")
    assert headers["authorization"] == f"Bearer {team.bearer_token}"
    assert Webhook(team.secret).verify(request.body, headers) == request.json
    assert receiver.received("/failed") == []  # only the outcome's callback
    job = get_job(client, team, job_id)
    assert job["status"] == "COMPLETED" and job["callbackStatus"] == "delivered"
    assert callback_rows(app, job_id) == [
        {
            "kind": "completed",
            "state": "delivered",
            "attempts": 1,
            "http_status": 200,
            "last_error": None,
        }
    ]


def test_failed_job_calls_its_failure_callback(
    app, client, make_team, receiver, redis, release_pass
):
    team = make_team("e2e", webhook_url=receiver.on("/hook", answer(410)))
    job_id = dispatch(
        client,
        team,
        callback=receiver.url("/done"),
        failureCallback=receiver.on("/failed", answer(204)),
    ).json["jobId"]
    run_worker(app, redis, release_pass)
    [request] = receiver.received("/failed")
    assert request.json == {
        "type": "job.failed",
        "jobId": job_id,
        "attempts": 1,
        "lastError": "HTTP 410 Gone: not retried",
    }
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert headers["webhook-id"] == f"{job_id}:failed"
    assert Webhook(team.secret).verify(request.body, headers) == request.json
    assert receiver.received("/done") == []
    job = get_job(client, team, job_id)
    assert job["status"] == "FAILED" and job["callbackStatus"] == "delivered"


def test_a_failing_callback_is_retried_3_times_then_failed_by_the_reconciler_passes(
    app, client, make_team, receiver, redis, release_pass, monkeypatch
):
    import time

    app.config["RETRY_DELAYS"] = [1.0]  # callbacks wait the deliveries' retry delays
    team = make_team("e2e", webhook_url=receiver.on("/hook", answer(200)))
    callback_url = receiver.on("/down", answer(500))
    job_id = dispatch(client, team, callback=callback_url).json["jobId"]
    run_worker(app, redis, release_pass)
    assert len(receiver.received("/down")) == 1
    assert get_job(client, team, job_id)["callbackStatus"] == "pending"
    [row] = callback_rows(app, job_id)
    assert row["state"] == "pending" and row["attempts"] == 1 and row["last_error"] == "HTTP 500"

    for expected, delay in ((2, 1.0), (3, 2.0), (4, 2.0)):
        # The retry waits 1 s, then 2 s and 4 s capped at RETRY_MAX_DELAY = 2 s, counted from
        # the failed attempt: pin the clock just before the due time (the machine may be slow,
        # so real time cannot be trusted to still be before it), then let real time pass it.
        due = next_callback_attempt(app, job_id)
        assert due is not None
        attempted_at = due - timedelta(seconds=delay)
        assert abs((attempted_at - datetime.now(UTC)).total_seconds()) < 30
        with app.app_context():
            early = due - timedelta(milliseconds=50)
            with monkeypatch.context() as pinned:
                pinned.setattr(callbacks.clock, "utcnow", lambda early=early: early)
                assert callbacks.hand_over_due()["callbacks_handed"] == 0
            time.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()) + 0.05)
            report = reconciler.reconcile()
            assert report["callbacks_handed"] == 1, report
        deliver_released(app, redis)
        assert len(receiver.received("/down")) == expected
        if expected < 4:
            # The next wait is measured from this attempt, not from the first one.
            assert next_callback_attempt(app, job_id) >= due + timedelta(seconds=1)
    time.sleep(2.1)
    with app.app_context():
        assert reconciler.reconcile()["callbacks_handed"] == 0  # 1 + 3 retries, then no more
    deliver_released(app, redis)
    assert len(receiver.received("/down")) == 4
    [row] = callback_rows(app, job_id)
    assert row["state"] == "failed" and row["attempts"] == 4
    job = get_job(client, team, job_id)
    assert job["status"] == "COMPLETED" and job["callbackStatus"] == "failed"
    # Every attempt carries the same id and body (receivers dedupe on webhook-id).
    bodies = {r.body for r in receiver.received("/down")}
    ids = {r.headers.get("webhook-id") for r in receiver.received("/down")}
    assert len(bodies) == 1 and ids == {f"{job_id}:completed"}


def test_a_callback_succeeding_on_retry_is_delivered(
    app, client, make_team, receiver, redis, release_pass
):
    import time

    team = make_team("e2e", webhook_url=receiver.on("/hook", answer(200)))
    flaky = receiver.on("/flaky", lambda n: (503 if n == 1 else 200, {}, b"", 0.0))
    job_id = dispatch(client, team, callback=flaky).json["jobId"]
    run_worker(app, redis, release_pass)
    time.sleep(0.5)
    with app.app_context():
        callbacks.hand_over_due()
    deliver_released(app, redis)
    assert len(receiver.received("/flaky")) == 2
    assert get_job(client, team, job_id)["callbackStatus"] == "delivered"


def test_a_gone_callback_is_not_retried(app, client, make_team, receiver, redis, release_pass):
    team = make_team("e2e", webhook_url=receiver.on("/hook", answer(200)))
    job_id = dispatch(client, team, callback=receiver.on("/gone", answer(410))).json["jobId"]
    run_worker(app, redis, release_pass)
    [row] = callback_rows(app, job_id)
    assert row["state"] == "failed" and row["attempts"] == 1
    assert get_job(client, team, job_id)["callbackStatus"] == "failed"


def test_callbacks_follow_the_delivery_ssrf_rules_when_sent(
    app, client, make_team, receiver, redis, release_pass, database_url, redis_url
):
    team = make_team("e2e", webhook_url=receiver.on("/hook", answer(200)))
    # Accepted while private addresses were allowed; the worker of an install that refuses them
    # calls neither the webhook nor the failure callback.
    job_id = dispatch(
        client, team, maxRetries=0, failureCallback=receiver.on("/private", answer(200))
    ).json["jobId"]
    release_pass()
    with other_app(database_url, redis_url, ALLOW_PRIVATE_WEBHOOKS=False) as strict:
        deliver_released(strict, redis)
    assert receiver.received() == []
    [row] = callback_rows(app, job_id)
    assert row["kind"] == "failed" and row["attempts"] == 1 and row["state"] == "pending"
    assert "refused" in row["last_error"] and "private" in row["last_error"]


def test_callbacks_never_count_toward_the_quota(
    app, client, make_team, receiver, redis, release_pass
):
    team = make_team("tiny_quota", webhook_url=receiver.on("/hook", answer(200)))
    for _ in range(10):
        assert dispatch(client, team, callback=receiver.on("/cb", answer(200))).status_code == 201
    run_worker(app, redis, release_pass)  # the free plan's parallelism: 5 at a time
    run_worker(app, redis, release_pass)
    assert len(receiver.received("/cb")) == 10
    usage = client.get("/api/usage", headers=team.headers).json
    assert usage["jobsThisMonth"] == 10 and usage["limit"] == 10


def test_a_replayed_job_gets_a_new_callback_for_its_new_outcome(
    app, client, make_team, receiver, redis, release_pass
):
    hook = receiver.on("/hook", lambda n: (500 if n == 1 else 200, {}, b"", 0.0))
    team = make_team("e2e", webhook_url=hook)
    job_id = dispatch(
        client,
        team,
        maxRetries=0,
        callback=receiver.on("/done", answer(200)),
        failureCallback=receiver.on("/failed", answer(200)),
    ).json["jobId"]
    run_worker(app, redis, release_pass)
    assert [r.json["type"] for r in receiver.received("/failed")] == ["job.failed"]
    assert client.post(f"/api/jobs/{job_id}/replay", headers=team.headers).status_code == 200
    run_worker(app, redis, release_pass)
    [done] = receiver.received("/done")
    assert done.json["attemptNumber"] == 2 and done.json["status"] == 200
    assert [row["kind"] for row in callback_rows(app, job_id)] == ["failed", "completed"]
    assert get_job(client, team, job_id)["callbackStatus"] == "delivered"


def test_a_worker_lost_while_sending_a_callback_is_retried(app, client, make_team, redis):
    team = make_team("e2e")
    job_id = dispatch(client, team, callback=PUBLIC).json["jobId"]
    now = datetime.now(UTC)
    with app.app_context():
        db.session.add(
            Callback(
                id="cb_stranded",
                job_id=job_id,
                kind="completed",
                url=PUBLIC,
                body="{}",
                state="sending",
                attempts=1,
                holder="gone-host:1:dead",
                started_at=now - timedelta(seconds=1),
                next_attempt_at=now - timedelta(seconds=1),
                created_at=now,
                updated_at=now,
            )
        )
        db.session.commit()
        report = callbacks.hand_over_due()
        assert report["callbacks_lost"] == 1
        row = db.session.get(Callback, "cb_stranded")
        assert row.state == "pending" and row.outcome == "worker_lost" and row.holder is None
        assert "gone-host:1:dead" in row.last_error
    # Handed to the workers once its retry delay (0.2 s) has passed.
    import time

    time.sleep(0.5)
    with app.app_context():
        assert callbacks.hand_over_due()["callbacks_handed"] == 1
        # Handed over, not claimed yet: not handed again on the next pass.
        assert callbacks.hand_over_due()["callbacks_handed"] == 0
    from rq.job import Job as RQJob

    # The queue also holds the pull of the job's dispatch (``deliver_due``).
    rq_jobs = [
        RQJob.fetch(rq_id.decode(), connection=redis)
        for rq_id in redis.lrange("rq:queue:dispatched", 0, -1)
    ]
    [rq_job] = [j for j in rq_jobs if j.func_name != "dispatched.delivery.deliver_due"]
    assert rq_job.func_name == "dispatched.delivery.deliver_callbacks"
    assert rq_job.args == (["cb_stranded"],)


def test_a_job_failed_over_with_no_retry_left_calls_its_failure_callback(
    app, client, make_team, receiver
):
    team = make_team("e2e")
    job_id = dispatch(
        client, team, maxRetries=0, failureCallback=receiver.on("/failed", answer(200))
    ).json["jobId"]
    with app.app_context():
        now = datetime.now(UTC)
        db.session.execute(
            sa.update(Job)
            .where(Job.id == job_id)
            .values(status="STARTED", attempts=1, started_at=now, holder="dead-worker")
        )
        db.session.commit()
        assert jobs.fail_over_lost(job_id, 1, "worker process dead-worker stopped") == "FAILED"
    [row] = callback_rows(app, job_id)
    assert row["kind"] == "failed" and row["state"] == "pending"
    with app.app_context():
        body = json.loads(db.session.execute(sa.select(Callback.body)).scalar_one())
    assert body == {
        "type": "job.failed",
        "jobId": job_id,
        "attempts": 1,
        "lastError": "worker lost: worker process dead-worker stopped",
    }
    assert get_job(client, team, job_id)["callbackStatus"] == "pending"


def test_job_page_shows_callbacks(app, client, make_team, receiver, redis, release_pass):
    from tests.test_dashboard import sign_up

    sign_up(client)
    with app.app_context():
        from dispatched.models import Team

        project = db.session.query(Team).filter_by(name="Acme").one().projects[0]
        project_id = project.id
        project.webhook_url = receiver.on("/hook", answer(200))
        db.session.commit()
        from dispatched import keys

        _, token = keys.issue_key(project, "test")
    headers = {"Authorization": f"Bearer {token}"}
    job_id = client.post(
        "/api/jobs/dispatch",
        headers=headers,
        json={"payload": {}, "callback": receiver.on("/cb", answer(500))},
    ).json["jobId"]
    page = client.get(f"/p/{project_id}/jobs/{job_id}").get_data(as_text=True)
    assert receiver.url("/cb") in page and "none sent yet" in page
    run_worker(app, redis, release_pass)
    page = client.get(f"/p/{project_id}/jobs/{job_id}").get_data(as_text=True)
    assert 'id="callbacks"' in page and "job.completed" in page and "HTTP 500" in page
    assert 'id="callback-status">pending' in page
    assert "every 2s" in page  # the panel keeps polling while the callback is pending


def test_metrics_count_callback_attempts(app, client, make_team, receiver, redis, release_pass):
    team = make_team("e2e", webhook_url=receiver.on("/hook", answer(200)))
    dispatch(client, team, callback=receiver.on("/cb", answer(200)))
    dispatch(client, team, callback=receiver.on("/down", answer(500)))
    run_worker(app, redis, release_pass)
    text = client.get("/metrics").get_data(as_text=True)
    assert 'dispatched_callback_attempts_total{outcome="delivered"} 1' in text
    assert 'dispatched_callback_attempts_total{outcome="http_error"} 1' in text
