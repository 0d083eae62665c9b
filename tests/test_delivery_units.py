"""Narrow tests of pure delivery logic and of the outbound session against a real receiver."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from dispatched import outbound, signing, webhooks
from dispatched.models import Project
from dispatched.transport_rq import SCHEDULED_KEY
from tests.support import answer, handed_over


def test_parse_retry_after():
    assert outbound.parse_retry_after("120") == 120
    assert outbound.parse_retry_after(None) is None
    assert outbound.parse_retry_after("soon") is None
    future = (datetime.now(UTC) + timedelta(seconds=60)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert 55 <= outbound.parse_retry_after(future) <= 61


def test_rotation_signs_with_both_secrets_and_each_verifies():
    old, new = webhooks.new_secret(), webhooks.new_secret()
    token = webhooks.new_bearer_token()
    body = json.dumps({"jobId": "job_1", "payload": {}}).encode()
    headers = signing.headers(
        (new, old), "job_1", int(datetime.now(UTC).timestamp()), body, bearer_token=token
    )
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert headers["Authorization"] == f"Bearer {token}"  # the bearer token, never a secret
    for secret in (old, new):
        assert Webhook(secret).verify(body, headers) == {"jobId": "job_1", "payload": {}}
    with pytest.raises(WebhookVerificationError):
        Webhook(webhooks.new_secret()).verify(body, headers)
    tampered = body.replace(b"job_1", b"job_2")
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(tampered, headers)


def test_live_secrets_keep_the_previous_one_for_24_hours():
    now = datetime.now(UTC)
    project = Project(
        webhook_secret="whsec_new",
        previous_webhook_secret="whsec_old",
        secret_rotated_at=now - timedelta(hours=23),
    )
    assert webhooks.live_secrets(project, now) == ("whsec_new", "whsec_old")
    project.secret_rotated_at = now - timedelta(hours=25)
    assert webhooks.live_secrets(project, now) == ("whsec_new",)


def test_private_addresses_refused_at_delivery(receiver):
    url = receiver.on("/hook", answer(200))
    refused = outbound.post(url, b"{}", {}, timeout=2, allow_private=False, allow_http=True)
    assert refused.outcome == "refused" and "private" in refused.error
    assert receiver.received() == []
    for target in [
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/",
        "http://[::1]:9/",
    ]:
        assert outbound.post(target, b"{}", {}, 1, False, allow_http=True).outcome == "refused"
    allowed = outbound.post(url, b"{}", {}, timeout=2, allow_private=True, allow_http=True)
    assert allowed.outcome == "success" and allowed.http_status == 200
    assert len(receiver.received()) == 1


def test_outbound_classifies_answers(receiver):
    cases = {
        "/ok": answer(204),
        "/gone": answer(410),
        "/err": answer(500),
        "/busy": answer(429, {"Retry-After": "7"}),
        "/redirect": answer(301, {"Location": "http://example.test/"}),
    }
    for path, behaviour in cases.items():
        receiver.on(path, behaviour)
    got = {p: outbound.post(receiver.url(p), b"{}", {}, 2, True, allow_http=True) for p in cases}
    assert got["/ok"].outcome == "success"
    assert got["/gone"].outcome == "gone"
    assert got["/err"].outcome == "http_error" and got["/err"].retry_after is None
    assert got["/busy"].retry_after == 7
    assert got["/redirect"].outcome == "http_error" and "not followed" in got["/redirect"].error
    closed = outbound.post("http://127.0.0.1:9/", b"{}", {}, 2, True, allow_http=True)
    assert closed.outcome == "connection_error"


def test_proxy_variables_are_ignored_for_webhooks(receiver, monkeypatch):
    """A proxy would hide the address the SSRF filter checks: deliveries never use one."""
    url = receiver.on("/direct", answer(200))
    outbound._managers.clear()  # the pools read their settings once, when they are made
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    try:
        result = outbound.post(url, b"{}", {}, timeout=2, allow_private=True, allow_http=True)
    finally:
        outbound._managers.clear()
    assert result.ok, result
    assert len(receiver.received("/direct")) == 1


def test_prefetch_and_the_timeout_of_an_attempt_that_waited_in_line(app):
    """A process holds a few attempts beyond its threads; one that waited so long for a thread
    that its full timeout would pass the reconciler's stuck-request limit (timeout +
    WORKER_LOST_GRACE from the claim) is sent with what is left of that limit instead."""
    import time
    from types import SimpleNamespace

    from dispatched.engine import DeliveryEngine, prefetch

    assert [prefetch(n) for n in (1, 4, 8, 64, 100)] == [2, 2, 4, 32, 50]
    app.config["WORKER_LOST_GRACE"] = 15
    engine = DeliveryEngine(app, threads=8)  # not started: no thread, no registration
    try:
        assert (engine.threads, engine.capacity) == (8, 12)
        attempt = SimpleNamespace(job_id="job_1", attempt_number=1, timeout=30)
        now = time.monotonic()
        assert engine._timeout(attempt, now) == 30
        assert engine._timeout(attempt, now - 12.9) == 30  # within 15 - 2 s of margin
        assert engine._timeout(attempt, now - 20) == pytest.approx(23, abs=0.5)  # 30 + 13 - 20
        assert engine._timeout(attempt, now - 100) == 1.0
    finally:
        engine._pool.shutdown()
    app.config["WORKER_LOST_GRACE"] = 1  # the margin is at most half the grace
    engine = DeliveryEngine(app, threads=8)
    try:
        assert engine._timeout(attempt, time.monotonic() - 0.4) == 30
        assert engine._timeout(attempt, time.monotonic() - 3) == pytest.approx(27.5, abs=0.5)
    finally:
        engine._pool.shutdown()


def test_attempt_reaching_a_worker_early_goes_back_to_the_scheduler(
    app, client, make_team, receiver, redis
):
    from dispatched import jobs, transport
    from dispatched.extensions import db
    from dispatched.models import Job
    from dispatched.rq_worker import DeliveryWorker

    team = make_team("e2e", webhook_url=receiver.on("/hook", answer(200)))
    when = datetime.now(UTC) + timedelta(hours=1)
    job_id = client.post(
        "/api/jobs/dispatch",
        headers=team.headers,
        json={"payload": {}, "scheduleFor": when.isoformat()},
    ).json["jobId"]
    with app.app_context():
        # A stale entry: the attempt is released to the queue an hour early.
        assert jobs.mark_dispatched(job_id, 1)
        transport.enqueue_now(job_id, 1, 2)
        DeliveryWorker(["dispatched"], connection=redis).work(burst=True)
        job = db.session.get(Job, job_id)
        assert job.status == "QUEUED" and job.attempts == 0
        assert abs((job.next_attempt_at - when).total_seconds()) < 0.01
    assert receiver.received() == []
    assert redis.zscore(SCHEDULED_KEY, f"{job_id}-1") is not None


def test_worker_drops_an_attempt_of_a_cancelled_job(app, client, make_team, receiver, redis):
    from dispatched import transport
    from dispatched.rq_worker import DeliveryWorker

    team = make_team("e2e", webhook_url=receiver.on("/hook", answer(200)))
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    job_id = client.post(
        "/api/jobs/dispatch", headers=team.headers, json={"payload": {}, "scheduleFor": later}
    ).json["jobId"]
    assert client.delete(f"/api/jobs/{job_id}", headers=team.headers).status_code == 200
    with app.app_context():
        transport.enqueue_now(job_id, 1, 2)
        DeliveryWorker(["dispatched"], connection=redis).work(burst=True)
    assert receiver.received() == []
    assert client.get(f"/api/jobs/{job_id}", headers=team.headers).json["status"] == "CANCELLED"


def test_reconciler_does_not_fail_over_a_worker_that_started_while_it_looked(
    app, client, make_team, redis
):
    """A worker that registers and claims an attempt between the reconciler's reads must not
    look dead: the reconciler reads the STARTED attempts first, then who is alive."""
    import sqlalchemy as sa

    from dispatched import reconciler
    from dispatched.extensions import db
    from dispatched.models import Job, WorkerProcess

    team = make_team("e2e", webhook_url="http://127.0.0.1:9/hook")
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    job_id = client.post(
        "/api/jobs/dispatch", headers=team.headers, json={"payload": {}, "scheduleFor": later}
    ).json["jobId"]
    fired = []

    def start_worker_and_claim(conn, cursor, statement, *args):
        if fired:
            return
        fired.append(statement)
        now = datetime.now(UTC)
        with db.engine.begin() as other:  # another process: its own connection
            other.execute(
                sa.insert(WorkerProcess.__table__).values(
                    id="wrk_new",
                    hostname="h",
                    pid=1,
                    started_at=now,
                    beat_at=now,
                    in_flight=1,
                    capacity=8,
                    stopping=False,
                )
            )
            other.execute(
                sa.update(Job.__table__)
                .where(Job.__table__.c.id == job_id)
                .values(status="STARTED", attempts=1, holder="wrk_new", started_at=now)
            )

    with app.app_context():
        sa.event.listen(db.engine, "after_cursor_execute", start_worker_and_claim)
        try:
            report = reconciler._fail_over_lost()
        finally:
            sa.event.remove(db.engine, "after_cursor_execute", start_worker_and_claim)
        assert fired, "the hook ran after the reconciler's first read"
        assert report == {"lost": 0}
        assert reconciler._fail_over_lost() == {"lost": 0}  # and on the next pass
        status = db.session.execute(sa.select(Job.status).where(Job.id == job_id)).scalar()
        db.session.rollback()
    assert status == "STARTED"


def test_on_due_leaves_no_transaction_open_after_a_db_error(app, monkeypatch):
    """The scheduler's session lives for the whole process: an error must not leave it inside
    a failed transaction, or every later tick would fail too."""
    import sqlalchemy as sa

    from dispatched import jobs
    from dispatched.extensions import db

    with app.app_context():
        real_execute = db.session.execute

        def failing_execute(*args, **kwargs):
            real_execute(sa.text("SELECT 1"))  # a transaction is now open
            raise sa.exc.OperationalError("SELECT", {}, Exception("server closed the connection"))

        monkeypatch.setattr(db.session, "execute", failing_execute)
        with pytest.raises(sa.exc.OperationalError):
            jobs.on_tick([("job_doesnotexist", 1)], set())
        assert not db.session().in_transaction()
        monkeypatch.setattr(db.session, "execute", real_execute)
        tick = jobs.on_tick([("job_doesnotexist", 1)], set())
        assert tick.decisions == {("job_doesnotexist", 1): False} and tick.groups == []


def test_scheduler_releases_a_due_batch_in_one_tick(app, client, make_team, redis):
    """One tick: due attempts released (DB DISPATCHED + handed over in groups), a cancelled one
    dropped, one rescheduled later (Redis not told) held until its real time."""
    import time as _time

    from dispatched import jobs, transport_rq
    from dispatched.extensions import db
    from dispatched.models import Job

    team = make_team("unlimited")
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    ids = [
        client.post(
            "/api/jobs/dispatch",
            headers=team.headers,
            json={"payload": {"n": n}, "scheduleFor": soon},
        ).json["jobId"]
        for n in range(40)
    ]
    cancelled, moved = ids[0], ids[1]
    assert client.delete(f"/api/jobs/{cancelled}", headers=team.headers).status_code == 200
    redis.zadd(SCHEDULED_KEY, {f"{cancelled}-1": 0})  # a stale entry survives
    later = datetime.now(UTC) + timedelta(hours=2)
    with app.app_context():
        db.session.execute(
            Job.__table__.update().where(Job.id == moved).values(next_attempt_at=later)
        )
        db.session.commit()
    _time.sleep(2.1)
    with app.app_context():
        scheduler = transport_rq.ReleaseScheduler(
            queue_name="dispatched", connection=redis, on_tick=jobs.on_tick
        )
        scheduler.release(set())
        statuses = {job.id: job.status for job in db.session.query(Job)}
    groups = handed_over(redis)
    # No worker process is registered: nothing to spread over, groups of at most 8.
    assert len(groups) == 5 and max(len(attempts) for _, attempts in groups) == 8
    assert sorted(ref for _, attempts in groups for ref in attempts) == sorted(
        [job_id, 1] for job_id in ids[2:]
    )
    assert all(statuses[job_id] == "DISPATCHED" for job_id in ids[2:])
    assert statuses[cancelled] == "CANCELLED" and statuses[moved] == "QUEUED"
    remaining = {k.decode(): v for k, v in redis.zrange(SCHEDULED_KEY, 0, -1, withscores=True)}
    assert list(remaining) == [f"{moved}-1"]
    assert remaining[f"{moved}-1"] == pytest.approx(later.timestamp(), abs=0.002)
