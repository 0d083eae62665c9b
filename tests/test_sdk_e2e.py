"""End to end: the SDK's receiver helpers verify real deliveries from running worker.py and
scheduler.py processes, in Flask, Django and FastAPI apps behind real HTTP servers, with jobs
dispatched through the SDK's client over real HTTP (DB and Redis real too)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from dispatched_sdk import Dispatched, diagnose

from dispatched import webhooks
from dispatched.extensions import db
from dispatched.models import Project
from tests import sdk_apps
from tests.support import wait_for

pytestmark = pytest.mark.slow

PAYLOAD = {"order": 7, "note": "naïve café ✓", "nested": {"z": 1, "a": [True, None]}}


@pytest.fixture()
def servers() -> Iterator[list[Any]]:
    started: list[Any] = []
    yield started
    for server in started:
        server.stop()


def wait_done(client: Dispatched, job_id: str, status: str = "COMPLETED") -> Any:
    return wait_for(
        lambda: (job := client.jobs.get(job_id)).status == status and job,
        timeout=30,
        message=f"job {job_id} {status}",
    )


def test_receiver_helpers_verify_real_deliveries(
    app, live_server, make_team, delivery_stack, servers
):
    received: dict[str, list] = {"flask": [], "django": [], "fastapi": []}
    teams = {}
    for name, build, server in (
        ("flask", sdk_apps.flask_app, sdk_apps.WSGIServer),
        ("django", sdk_apps.django_app, sdk_apps.WSGIServer),
        ("fastapi", sdk_apps.fastapi_app, sdk_apps.ASGIServer),
    ):
        team = make_team("e2e")
        # Each receiver checks both credentials: the Standard Webhooks signature and the bearer.
        running = server(build(received[name], secret=team.secret, bearer_token=team.bearer_token))
        servers.append(running)
        with app.app_context():
            webhooks.set_url(db.session.get(Project, team.project_id), f"{running.url}/hook")
        teams[name] = team

    jobs = {}
    for name, team in teams.items():
        with Dispatched(team.token, base_url=live_server) as client:
            jobs[name] = client.jobs.dispatch(PAYLOAD, max_retries=0).job_id
            job = wait_done(client, jobs[name])
            assert job.attempts == 1 and job.last_error is None
            assert client.jobs.attempts(jobs[name])[0].http_status == 200
    for name, job_id in jobs.items():
        assert len(received[name]) == 1, name
        delivery = received[name][0]
        assert delivery["jobId"] == job_id and delivery["attemptNumber"] == 1
        assert delivery["payload"] == PAYLOAD and list(delivery["payload"]) == list(PAYLOAD)


def test_a_rotation_keeps_old_and_new_receivers_verifying(
    app, live_server, make_team, delivery_stack, servers
):
    team = make_team("e2e")
    old_received: list = []
    new_received: list = []
    old = sdk_apps.WSGIServer(sdk_apps.flask_app(old_received, secret=team.secret))
    servers.append(old)
    with app.app_context():
        project = db.session.get(Project, team.project_id)
        new_secret = webhooks.rotate_secret(project)
        webhooks.set_url(project, f"{old.url}/hook")
    new = sdk_apps.ASGIServer(sdk_apps.fastapi_app(new_received, secret=new_secret))
    servers.append(new)
    with Dispatched(team.token, base_url=live_server) as client:
        first = client.jobs.dispatch({"to": "old"}, max_retries=0).job_id
        wait_done(client, first)
        with app.app_context():
            webhooks.set_url(db.session.get(Project, team.project_id), f"{new.url}/hook")
        second = client.jobs.dispatch({"to": "new"}, max_retries=0).job_id
        wait_done(client, second)
    assert [d["jobId"] for d in old_received] == [first]
    assert [d["jobId"] for d in new_received] == [second]


def test_a_receiver_verifying_parsed_json_fails_and_the_doctor_says_why(
    app, live_server, make_team, delivery_stack, servers
):
    team = make_team("e2e")
    seen: list = []
    flask_app = sdk_apps.flask_app([], secret=team.secret)

    @flask_app.before_request
    def capture() -> None:
        from flask import request

        seen.append((dict(request.headers), request.get_data(), request.get_json()))

    server = sdk_apps.WSGIServer(flask_app)
    servers.append(server)
    with app.app_context():
        webhooks.set_url(db.session.get(Project, team.project_id), f"{server.url}/parsed")
    with Dispatched(team.token, base_url=live_server) as client:
        job_id = client.jobs.dispatch(PAYLOAD, max_retries=0).job_id
        job = wait_done(client, job_id, "FAILED")
        attempt = client.jobs.attempts(job_id)[0]
    assert job.last_error and attempt.http_status == 401
    assert "no_matching_signature" in attempt.response_excerpt

    headers, raw, parsed = seen[0]
    # What the buggy receiver verified: the parsed JSON encoded again.
    result = diagnose(headers, json.dumps(parsed), secret=team.secret)
    codes = {f.code: f.message for f in result.findings}
    assert not result.verified and "BODY_CHANGED" in codes
    assert "same JSON encoded differently" in codes["BODY_CHANGED"]
    # The raw bytes it got do verify.
    assert diagnose(headers, raw, secret=team.secret, bearer_token=team.bearer_token).verified
