"""'Send test event' goes through the delivery workers: queued by the web request, sent by a
worker's engine with the plan's timeout, its answer polled by the webhook page."""

from __future__ import annotations

import re
import time

import pytest
import requests
from standardwebhooks.webhooks import Webhook

from dispatched.extensions import db
from dispatched.models import Project
from tests.support import answer, wait_for
from tests.test_dashboard import page_token, project_id_of, sign_up

HX = {"HX-Request": "true"}


@pytest.fixture()
def owner(app, client) -> int:
    """A signed-up user's project id (team "Acme"), logged in on ``client``."""
    assert sign_up(client).status_code == 200
    return project_id_of(app, "Acme")


def set_url(client, project_id: int, url: str) -> str:
    token = page_token(client, f"/p/{project_id}/webhook")
    r = client.post(f"/p/{project_id}/webhook", data={"csrf_token": token, "url": url})
    assert r.status_code == 302, r.get_data(as_text=True)
    return token


def send(client, project_id: int, token: str, htmx: bool = True):
    headers = {**HX, "X-CSRFToken": token} if htmx else {}
    data = {} if htmx else {"csrf_token": token}
    return client.post(f"/p/{project_id}/webhook/test", headers=headers, data=data)


def run_worker(app, redis) -> None:
    """Run the delivery queue once in-process (a DeliveryWorker with its engine)."""
    from dispatched.rq_worker import DeliveryWorker

    with app.app_context():
        DeliveryWorker(["dispatched"], connection=redis).work(burst=True)


def poll_url(html: str) -> str | None:
    match = re.search(r'hx-get="([^"]+/webhook/test/test_[^"]+)"', html)
    return match.group(1) if match else None


def assert_signed_like_a_delivery(app, project_id: int, got) -> None:
    from dispatched.outbound import USER_AGENT

    with app.app_context():
        secret = db.session.get(Project, project_id).webhook_secret
    headers = {k.lower(): v for k, v in got.headers.items()}
    test_id = headers["webhook-id"]
    assert test_id.startswith("test_")
    assert Webhook(secret).verify(got.body, headers) == {
        "jobId": test_id,
        "attemptId": test_id,
        "attempt": test_id,
        "attemptNumber": 1,
        "payload": {"type": "dispatched.test", "message": "Test event from the dashboard"},
    }
    assert headers["content-type"] == "application/json" and headers["user-agent"] == USER_AGENT


def test_htmx_post_queues_and_the_page_polls_until_the_answer(app, client, owner, receiver, redis):
    token = set_url(client, owner, receiver.on("/hook", answer(200)))
    r = send(client, owner, token)
    html = r.get_data(as_text=True)
    assert r.status_code == 202 and "waiting for a delivery worker" in html
    assert 'hx-trigger="every 1s"' in html
    assert receiver.received() == []  # nothing was sent inside the web request
    url = poll_url(html)
    pending = client.get(url, headers=HX).get_data(as_text=True)
    assert 'hx-trigger="every 1s"' in pending

    run_worker(app, redis)
    done = client.get(url, headers=HX)
    body = done.get_data(as_text=True)
    assert done.status_code == 200 and "Receiver answered HTTP 200" in body
    assert "hx-trigger" not in body  # finished: the polling stops
    (got,) = receiver.received("/hook")
    assert_signed_like_a_delivery(app, owner, got)
    headers = {k.lower(): v for k, v in got.headers.items()}
    with app.app_context():
        project = db.session.get(Project, owner)
        secret, bearer_token = project.webhook_secret, project.webhook_bearer_token
    assert headers["authorization"] == f"Bearer {bearer_token}"  # the token, never the secret
    assert secret not in headers["authorization"]


def test_without_javascript_the_post_redirects_to_the_pending_result(
    app, client, owner, receiver, redis
):
    """The no-JS form POST used to answer 500 (`result` vs `test_result`)."""
    token = set_url(client, owner, receiver.on("/hook", answer(503)))
    r = send(client, owner, token, htmx=False)
    assert r.status_code == 302
    location = r.headers["Location"]
    assert re.search(rf"/p/{owner}/webhook\?test=test_\w+#test-result$", location)
    page = client.get(location)
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "waiting for a delivery worker" in html
    assert "<noscript><a href=" in html and "Refresh</a>" in html

    run_worker(app, redis)
    html = client.get(location).get_data(as_text=True)
    assert "✗ HTTP 503" in html and "Webhook" in html


def test_the_plan_timeout_applies_and_an_answer_expires(app, client, owner, receiver, redis):
    from dispatched import test_events
    from dispatched.models import Team

    with app.app_context():
        team = db.session.query(Team).filter_by(name="Acme").one()
        team.plan = "e2e"  # a 2 s delivery timeout
        db.session.commit()
    token = set_url(client, owner, receiver.on("/slow", answer(200, delay=4)))
    location = send(client, owner, token, htmx=False).headers["Location"]
    started = time.monotonic()
    run_worker(app, redis)
    assert time.monotonic() - started < 3.5
    assert "timed out after 2s" in client.get(location).get_data(as_text=True)

    event_id = re.search(r"test=(test_\w+)", location).group(1)
    redis.delete(f"dispatched:test-event:{owner}:{event_id}")  # as if KEEP had passed
    assert "has expired" in client.get(location).get_data(as_text=True)
    assert client.get(f"/p/{owner}/webhook/test/{event_id}", headers=HX).status_code == 404
    assert test_events.KEEP <= 3600


def test_an_event_no_worker_took_in_time_is_not_sent(
    app, client, owner, receiver, redis, monkeypatch
):
    from dispatched import test_events

    token = set_url(client, owner, receiver.on("/hook", answer(200)))
    url = poll_url(send(client, owner, token).get_data(as_text=True))
    later = time.time() + test_events.QUEUE_TTL + 10
    monkeypatch.setattr(test_events.time, "time", lambda: later)
    html = client.get(url, headers=HX).get_data(as_text=True)
    assert "not sent" in html and "worker process running" in html
    assert "hx-trigger" not in html
    run_worker(app, redis)  # a worker that finally takes it drops it
    assert receiver.received() == []


def test_test_events_are_rate_limited_per_project(app, client, owner, receiver, redis):
    from dispatched import test_events

    token = set_url(client, owner, receiver.on("/hook", answer(200)))
    for _ in range(6):
        assert send(client, owner, token).status_code == 202
    refused = send(client, owner, token)
    assert refused.status_code == 429
    assert "Too many test events" in refused.get_data(as_text=True)
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    no_js = send(client, owner, token, htmx=False)
    assert no_js.status_code == 429 and "Too many test events" in no_js.get_data(as_text=True)
    assert "<h1>Webhook</h1>" in no_js.get_data(as_text=True)  # the page, with the reason
    assert test_events.RATE_LIMIT == "6 per minute"

    # Another project of the same team has its own budget.
    r = client.post("/projects", data={"csrf_token": token, "name": "staging"})
    assert r.status_code in (200, 302)
    with app.app_context():
        other = db.session.query(Project).filter_by(name="staging").one().id
    set_url(client, other, receiver.url("/hook"))
    assert send(client, other, token).status_code == 202


def test_no_webhook_url_is_a_clear_400(client, owner):
    token = page_token(client, f"/p/{owner}/webhook")
    r = send(client, owner, token)
    assert r.status_code == 400 and "Set a webhook URL first" in r.get_data(as_text=True)


def test_another_teams_project_and_event_are_404(app, client, owner, receiver, redis):
    token = set_url(client, owner, receiver.on("/hook", answer(200)))
    url = poll_url(send(client, owner, token).get_data(as_text=True))
    event_id = url.rsplit("/", 1)[1]

    intruder = app.test_client()
    sign_up(intruder, email="mallory@example.com", team="Mallory")
    theirs = project_id_of(app, "Mallory")
    their_token = page_token(intruder, f"/p/{theirs}/webhook")
    assert send(intruder, owner, their_token).status_code == 404
    assert send(intruder, owner, their_token, htmx=False).status_code == 404
    assert intruder.get(url, headers=HX).status_code == 404
    # Their own project does not see our event either.
    assert intruder.get(f"/p/{theirs}/webhook/test/{event_id}").status_code == 404
    page = intruder.get(f"/p/{theirs}/webhook?test={event_id}").get_data(as_text=True)
    assert "has expired" in page
    run_worker(app, redis)
    assert len(receiver.received()) == 1


def test_post_without_csrf_is_refused(client, owner, receiver):
    set_url(client, owner, receiver.on("/hook", answer(200)))
    assert client.post(f"/p/{owner}/webhook/test", headers=HX).status_code == 400
    assert receiver.received() == []


@pytest.mark.slow
def test_web_request_returns_at_once_while_a_worker_waits_on_a_slow_receiver(
    app, live_server, receiver, delivery_stack
):
    http = requests.Session()
    page = http.get(f"{live_server}/signup", timeout=10).text
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    http.post(
        f"{live_server}/signup",
        data={
            "csrf_token": token,
            "team": "Slow",
            "email": "s@example.com",
            "password": "pw-123456789012",
        },
        timeout=10,
    )
    pid = project_id_of(app, "Slow")
    with app.app_context():
        db.session.get(Project, pid).webhook_url = receiver.on("/slow", answer(200, delay=3))
        db.session.commit()
    # The CSRF token changes at login: take the one of the logged-in session.
    page = http.get(f"{live_server}/p/{pid}/webhook", timeout=10).text
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)

    started = time.monotonic()
    r = http.post(
        f"{live_server}/p/{pid}/webhook/test",
        headers={**HX, "X-CSRFToken": token},
        timeout=10,
    )
    assert r.status_code == 202 and time.monotonic() - started < 1.0
    health = time.monotonic()
    assert requests.get(f"{live_server}/healthz", timeout=10).status_code == 200
    assert time.monotonic() - health < 1.0
    url = live_server + poll_url(r.text)

    wait_for(lambda: receiver.received("/slow"), timeout=15, message="the worker's POST")
    assert "Sending…" in http.get(url, headers=HX, timeout=10).text  # receiver still thinking
    html = wait_for(
        lambda: (t := http.get(url, headers=HX, timeout=10).text) and "answered" in t and t,
        timeout=15,
        message="the receiver's answer on the page",
    )
    duration = int(re.search(r"in (\d+) ms", html).group(1))
    assert duration >= 3000 and "hx-trigger" not in html
    (got,) = receiver.received("/slow")
    assert_signed_like_a_delivery(app, pid, got)
