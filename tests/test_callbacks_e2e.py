"""Callbacks end to end (DESIGN.md §11): the API over HTTP, real worker.py and scheduler.py
processes (the reconciler hands retries over), Redis, the DB and real HTTP receivers."""

from __future__ import annotations

import os
import signal

import pytest
import requests
import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook

from dispatched.extensions import db
from dispatched.models import Callback
from tests.support import answer, wait_for

pytestmark = pytest.mark.slow


def api(live_server, team, method, path, **kwargs):
    return requests.request(
        method, f"{live_server}/api{path}", headers=team.headers, timeout=10, **kwargs
    )


def wait_callback_status(live_server, team, job_id, status, timeout=30.0):
    return wait_for(
        lambda: (
            (j := api(live_server, team, "GET", f"/jobs/{job_id}").json())["callbackStatus"]
            == status
            and j
        ),
        timeout=timeout,
        interval=0.1,
        message=f"job {job_id}'s callback to be {status}",
    )


def lower(headers):
    return {k.lower(): v for k, v in headers.items()}


def test_callbacks_of_completed_and_failed_jobs_signed_and_retried(
    live_server, make_team, receiver, delivery_stack
):
    ok_team = make_team("e2e", webhook_url=receiver.on("/ok", answer(200)))
    # The completion callback answers 500 twice: retried (after the retry delays) until a 2xx.
    flaky = receiver.on("/flaky-cb", lambda n: (500 if n <= 2 else 200, {}, b"", 0.0))
    done = api(
        live_server,
        ok_team,
        "POST",
        "/jobs/dispatch",
        json={"payload": {"order": 1}, "callback": flaky},
    ).json()
    bad_team = make_team("e2e", webhook_url=receiver.on("/bad", answer(500, delay=0.0)))
    failed = api(
        live_server,
        bad_team,
        "POST",
        "/jobs/dispatch",
        json={
            "payload": {},
            "maxRetries": 1,
            "callback": receiver.url("/never"),
            "failureCallback": receiver.on("/failed-cb", answer(200)),
        },
    ).json()

    job = wait_callback_status(live_server, ok_team, done["jobId"], "delivered")
    assert job["status"] == "COMPLETED" and job["callback"] == flaky
    calls = receiver.received("/flaky-cb")
    assert len(calls) == 3
    for call in calls:
        assert call.json == {
            "type": "job.completed",
            "jobId": done["jobId"],
            "attemptNumber": 1,
            "status": 200,
            "body": '{"ok": true}',
        }
        assert lower(call.headers)["webhook-id"] == f"{done['jobId']}:completed"
        assert Webhook(ok_team.secret).verify(call.body, lower(call.headers)) == call.json
        assert lower(call.headers)["authorization"] == f"Bearer {ok_team.bearer_token}"
    # Retried after the retry delays (0.2 s, then 0.4 s), by the reconciler's hand-over.
    assert calls[1].at - calls[0].at >= 0.19 and calls[2].at - calls[1].at >= 0.39

    job = wait_callback_status(live_server, bad_team, failed["jobId"], "delivered")
    assert job["status"] == "FAILED" and job["attempts"] == 2
    [call] = receiver.received("/failed-cb")
    assert call.json == {
        "type": "job.failed",
        "jobId": failed["jobId"],
        "attempts": 2,
        "lastError": "HTTP 500",
    }
    assert lower(call.headers)["webhook-id"] == f"{failed['jobId']}:failed"
    assert Webhook(bad_team.secret).verify(call.body, lower(call.headers)) == call.json
    assert receiver.received("/never") == []
    # Callbacks are not jobs: the quota counted one job per team.
    for team in (ok_team, bad_team):
        assert api(live_server, team, "GET", "/usage").json()["jobsThisMonth"] == 1


def test_a_callback_whose_worker_is_killed_is_sent_again_by_another(
    app, live_server, make_team, receiver, processes, redis
):
    # Two worker processes with one RQ worker each; the first callback request hangs.
    for name in ("w1", "w2"):
        processes.start(name, "worker.py", WORKER_CONCURRENCY="1")
    processes.start("scheduler", "scheduler.py")
    wait_for(lambda: redis.scard("rq:workers:dispatched") >= 2, timeout=30, message="2 workers")
    team = make_team("engine", webhook_url=receiver.on("/hook", answer(200)))
    hanging = receiver.on("/cb", lambda n: (200, {}, b"", 60.0 if n == 1 else 0.0))
    job_id = api(
        live_server, team, "POST", "/jobs/dispatch", json={"payload": {}, "callback": hanging}
    ).json()["jobId"]
    wait_for(lambda: receiver.received("/cb"), timeout=30, message="the callback request")

    def holder():
        with app.app_context():
            value = db.session.execute(
                sa.select(Callback.holder).where(Callback.job_id == job_id)
            ).scalar()
            db.session.rollback()
            return value

    worker_id = wait_for(holder, message="the callback's holder")
    pid = int(worker_id.split(":")[1])
    victim = next(name for name, proc in processes.procs.items() if proc.pid == pid)
    os.killpg(pid, signal.SIGKILL)
    processes.procs.pop(victim).wait(10)

    job = wait_callback_status(live_server, team, job_id, "delivered", timeout=40)
    assert job["status"] == "COMPLETED"
    assert len(receiver.received("/cb")) == 2
    with app.app_context():
        row = db.session.execute(sa.select(Callback).where(Callback.job_id == job_id)).scalar()
        assert row.attempts == 2 and row.state == "delivered" and row.http_status == 200
        db.session.rollback()
