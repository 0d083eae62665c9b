"""Endpoint health (DESIGN.md §12): the pause rule, the hold, probes, resume and slow start,
the banner and /metrics. Tiny thresholds; real DB and Redis, in-process workers here (real
worker/scheduler processes in test_endpoint_health_e2e.py)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from dispatched import endpoint_health, flow, flow_settings, webhooks
from dispatched.extensions import db
from dispatched.models import Job, Project, ProjectFlow
from dispatched.outbound import Result
from tests.support import answer, due_now, handed_over
from tests.test_dashboard import csrf_from, project_id_of, sign_up
from tests.test_secrets_and_defaults import deliver_released

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
OK = Result("success", 5, 200, "ok")
E500 = Result("http_error", 5, 500, "", error="HTTP 500")
LOST = Result("worker_lost", None, error="worker lost")


# --- flow arithmetic (pure) ----------------------------------------------------------------------


@pytest.mark.unit
def test_a_paused_endpoint_releases_nothing_before_its_probe_time():
    settings = flow.Settings(parallelism=50, rate=None, cap=50)
    paused = flow.State(endpoint_paused_at=NOW, probe_at=NOW + timedelta(minutes=10))
    assert flow.budget(settings, paused, 0, NOW) == (0, NOW + timedelta(minutes=10))


@pytest.mark.unit
def test_a_due_probe_is_one_attempt_at_a_time():
    settings = flow.Settings(parallelism=50, rate=None, cap=50)
    due = flow.State(endpoint_paused_at=NOW, probe_at=NOW - timedelta(seconds=1))
    assert flow.budget(settings, due, 0, NOW) == (1, None)
    # One in flight (the probe, or an attempt sent before the pause): wait for its result.
    assert flow.budget(settings, due, 1, NOW) == (0, None)
    # A Retry-After pause still comes first.
    held = flow.State(
        endpoint_paused_at=NOW, probe_at=NOW, paused_until=NOW + timedelta(seconds=30)
    )
    assert flow.budget(settings, held, 0, NOW) == (0, NOW + timedelta(seconds=30))
    # And the rate: no token, no probe.
    rated = flow.Settings(parallelism=50, rate=0.5, cap=50)
    spent = flow.State(endpoint_paused_at=NOW, probe_at=NOW, tokens=0.0, tokens_at=NOW)
    assert flow.budget(rated, spent, 0, NOW) == (0, NOW + timedelta(seconds=2))


@pytest.mark.unit
def test_slow_start_doubles_per_success_up_to_the_setting():
    settings = flow.Settings(parallelism=10, rate=None, cap=50)
    state = flow.State(effective=1, slow_start=True)
    seen = []
    for _ in range(5):
        state = flow.after_results(settings, state, [flow.Outcome(True, 200)], NOW)
        seen.append((state.effective, state.slow_start))
    assert seen == [(2, True), (4, True), (8, True), (None, False), (None, False)]


@pytest.mark.unit
def test_slow_start_keeps_its_value_on_a_failure_and_ends_on_throttling():
    settings = flow.Settings(parallelism=10, rate=None, cap=50)
    state = flow.State(effective=4, slow_start=True)
    failed = flow.after_results(settings, state, [flow.Outcome(False, 500)], NOW)
    assert (failed.effective, failed.slow_start) == (4, True)
    throttled = flow.after_results(settings, state, [flow.Outcome(False, 429)], NOW)
    assert (throttled.effective, throttled.slow_start) == (2, False)
    # Then back-pressure's own recovery (+1 per 20 successes), not doubling.
    after = flow.after_results(settings, throttled, [flow.Outcome(True, 200)], NOW)
    assert (after.effective, after.streak) == (2, 1)


@pytest.mark.unit
def test_slow_start_with_a_setting_of_one_ends_at_once():
    settings = flow.Settings(parallelism=1, rate=None, cap=5)
    state = flow.after_results(
        settings, flow.State(effective=1, slow_start=True), [flow.Outcome(True, 200)], NOW
    )
    assert (state.effective, state.slow_start) == (None, False)


# --- the pause rule (DB) ----------------------------------------------------------------------


@pytest.fixture()
def tiny(app):
    """Pause after 3 failures in a row, however short the span; probe every 2 s."""
    app.config.update(
        ENDPOINT_PAUSE_AFTER_FAILURES=3, ENDPOINT_PAUSE_AFTER_HOURS=0, ENDPOINT_PROBE_INTERVAL=2
    )
    return app


def flow_row(app, project_id):
    with app.app_context():
        row = db.session.get(ProjectFlow, project_id)
        if row is None:
            row = ProjectFlow(project_id=project_id, streak=0, tokens=1.0, waiting=False)
            db.session.add(row)
            db.session.commit()
        values = {c.name: getattr(row, c.name) for c in ProjectFlow.__table__.columns}
        db.session.rollback()
        return values


def record(app, project_id, *results, now=None):
    with app.app_context():
        endpoint_health.record([(project_id, r) for r in results], now or datetime.now(UTC))
        db.session.commit()
    return flow_row(app, project_id)


def test_pause_after_the_configured_run_of_failures(tiny, team):
    flow_row(tiny, team.project_id)
    row = record(tiny, team.project_id, E500, E500)
    assert row["endpoint_failures"] == 2 and row["endpoint_paused_at"] is None
    first = row["endpoint_failing_since"]
    before = datetime.now(UTC)
    row = record(tiny, team.project_id, Result("timeout", 2000, error="timed out after 2s"))
    assert row["endpoint_failures"] == 3 and row["endpoint_failing_since"] == first
    assert row["endpoint_paused_at"] >= before
    assert row["endpoint_pause_reason"] == (
        f"3 failed attempts in a row since {first.strftime('%Y-%m-%dT%H:%M:%S.%f')[:-3]}Z; "
        "last error: timed out after 2s"
    )
    assert 1.9 <= (row["endpoint_probe_at"] - row["endpoint_paused_at"]).total_seconds() <= 2.1
    with tiny.app_context():
        shown = endpoint_health.state(team.project_id).to_dict()
    assert shown["state"] == "paused" and shown["reason"] == row["endpoint_pause_reason"]
    assert shown["since"].endswith("Z")


def test_a_success_ends_the_run_in_the_order_attempts_finished(tiny, team):
    flow_row(tiny, team.project_id)
    assert record(tiny, team.project_id, E500, E500)["endpoint_failures"] == 2
    row = record(tiny, team.project_id, OK)
    assert row["endpoint_failures"] == 0 and row["endpoint_failing_since"] is None
    row = record(tiny, team.project_id, E500, E500, OK, E500, E500)
    assert row["endpoint_failures"] == 2 and row["endpoint_paused_at"] is None
    row = record(tiny, team.project_id, E500, OK)
    assert row["endpoint_failures"] == 0


def test_the_run_must_also_span_the_configured_hours(tiny, team):
    tiny.config["ENDPOINT_PAUSE_AFTER_HOURS"] = 1.5
    flow_row(tiny, team.project_id)
    now = datetime.now(UTC)
    row = record(tiny, team.project_id, *[E500] * 10, now=now)
    assert row["endpoint_failures"] == 10 and row["endpoint_paused_at"] is None
    row = record(tiny, team.project_id, E500, now=now + timedelta(hours=1))
    assert row["endpoint_paused_at"] is None
    row = record(tiny, team.project_id, E500, now=now + timedelta(hours=1, minutes=31))
    assert row["endpoint_failures"] == 12
    assert row["endpoint_paused_at"] == now + timedelta(hours=1, minutes=31)


def test_a_lost_worker_is_not_the_endpoints_failure(tiny, team):
    flow_row(tiny, team.project_id)
    row = record(tiny, team.project_id, E500, LOST, LOST, LOST, E500)
    assert row["endpoint_failures"] == 2 and row["endpoint_paused_at"] is None


def test_failures_while_paused_put_off_the_next_probe_and_a_success_resumes(tiny, team):
    flow_row(tiny, team.project_id)
    now = datetime.now(UTC)
    paused = record(tiny, team.project_id, E500, E500, E500, now=now)
    assert paused["endpoint_probe_at"] == now + timedelta(seconds=2)
    later = now + timedelta(seconds=5)
    row = record(tiny, team.project_id, E500, now=later)
    assert row["endpoint_paused_at"] == paused["endpoint_paused_at"]  # still the same pause
    assert row["endpoint_probe_at"] == later + timedelta(seconds=2)
    assert row["endpoint_failures"] == 4
    row = record(tiny, team.project_id, OK)
    assert row["endpoint_paused_at"] is None and row["endpoint_pause_reason"] is None
    assert row["endpoint_probe_at"] is None and row["endpoint_failures"] == 0
    assert row["effective"] == 1 and row["slow_start"] is True
    assert row["waiting"] is True and row["wake_at"] is None  # held attempts go at once


def test_a_new_webhook_url_restarts_the_count_but_does_not_resume(tiny, team):
    flow_row(tiny, team.project_id)
    record(tiny, team.project_id, E500, E500)
    with tiny.app_context():
        project = db.session.get(Project, team.project_id)
        webhooks.set_url(project, project.webhook_url)  # unchanged: the count stays
    assert flow_row(tiny, team.project_id)["endpoint_failures"] == 2
    with tiny.app_context():
        webhooks.set_url(db.session.get(Project, team.project_id), "https://93.184.216.34/new")
    assert flow_row(tiny, team.project_id)["endpoint_failures"] == 0
    record(tiny, team.project_id, E500, E500, E500)
    with tiny.app_context():
        webhooks.set_url(db.session.get(Project, team.project_id), "https://93.184.216.34/fix")
    row = flow_row(tiny, team.project_id)
    assert row["endpoint_paused_at"] is not None and row["endpoint_failures"] == 0


def test_resume_endpoint_clears_the_pause_with_slow_start(tiny, team):
    flow_row(tiny, team.project_id)
    with tiny.app_context():
        assert flow_settings.resume_endpoint(team.project_id) is False  # not paused
    assert flow_row(tiny, team.project_id)["slow_start"] is False
    record(tiny, team.project_id, E500, E500, E500)
    with tiny.app_context():
        assert flow_settings.resume_endpoint(team.project_id) is True
        assert endpoint_health.state(team.project_id).to_dict() == {
            "state": "active",
            "reason": None,
            "since": None,
        }
    row = flow_row(tiny, team.project_id)
    assert (row["effective"], row["slow_start"], row["waiting"]) == (1, True, True)
    assert row["endpoint_failures"] == 0


def test_a_project_without_flow_row_is_active(app, team):
    with app.app_context():
        assert endpoint_health.state(team.project_id).to_dict()["state"] == "active"
        assert flow_settings.resume_endpoint(team.project_id) is False


def test_metrics_count_paused_endpoints(tiny, client, make_team):
    teams = [make_team("free") for _ in range(3)]
    for info in teams:
        flow_row(tiny, info.project_id)
    for info in teams[:2]:
        record(tiny, info.project_id, E500, E500, E500)
    text = client.get("/metrics").get_data(as_text=True)
    assert "# TYPE dispatched_endpoints_paused gauge" in text
    assert "\ndispatched_endpoints_paused 2\n" in text


# --- the hold and the probe (release, in-process workers) -----------------------------------------


def job_states(app, ids):
    with app.app_context():
        rows = db.session.execute(
            sa.select(Job.id, Job.status, Job.attempts).where(Job.id.in_(ids))
        ).all()
        db.session.rollback()
        return {row.id: (row.status, row.attempts) for row in rows}


def test_paused_endpoint_holds_due_attempts_queued_then_a_probe_resumes_it(
    tiny, client, make_team, receiver, redis, release_pass
):
    app = tiny
    team = make_team("e2e", webhook_url=receiver.on("/hook", answer(500)))
    dispatch = lambda: client.post(  # noqa: E731
        "/api/jobs/dispatch", headers=team.headers, json={"payload": {}, "maxRetries": 0}
    ).json["jobId"]
    failing = [dispatch() for _ in range(3)]
    release_pass()
    deliver_released(app, redis)
    assert {s for s, _ in job_states(app, failing).values()} == {"FAILED"}
    assert flow_row(app, team.project_id)["endpoint_paused_at"] is not None

    receiver.on("/hook", answer(200))  # the endpoint is fixed; nobody resumed it
    held = [dispatch() for _ in range(4)]
    deliver_released(app, redis)  # the worker's pull finds the endpoint paused: nothing starts
    assert due_now(redis) == []
    release_pass()
    assert handed_over(redis) == []
    assert job_states(app, held) == dict.fromkeys(held, ("QUEUED", 0))  # no retry spent
    row = flow_row(app, team.project_id)
    assert row["waiting"] is True and row["wake_at"] == row["endpoint_probe_at"]

    time.sleep(max(0.0, (row["endpoint_probe_at"] - datetime.now(UTC)).total_seconds()) + 0.05)
    release_pass()
    [(_, probe)] = handed_over(redis)
    assert len(probe) == 1  # one real due attempt, the oldest
    assert probe[0][0] == held[0]
    deliver_released(app, redis)  # it succeeds: resumed, then slow start releases the rest
    row = flow_row(app, team.project_id)
    assert row["endpoint_paused_at"] is None
    for _ in range(5):
        release_pass()
        deliver_released(app, redis)
    assert job_states(app, held) == dict.fromkeys(held, ("COMPLETED", 1))


# --- the dashboard banner ----------------------------------------------------------------------


@pytest.fixture()
def paused_owner(tiny, client):
    sign_up(client)
    project_id = project_id_of(tiny, "Acme")
    flow_row(tiny, project_id)
    record(tiny, project_id, E500, E500, Result("http_error", 5, 502, "", error="HTTP 502"))
    return project_id


PAGES = ["/p/{}/", "/p/{}/jobs", "/p/{}/keys", "/p/{}/webhook", "/p/{}/plan"]


def test_every_page_of_a_paused_project_shows_the_banner(tiny, client, paused_owner):
    for page in PAGES:
        html = client.get(page.format(paused_owner)).get_data(as_text=True)
        assert 'id="endpoint-banner"' in html, page
        assert "Deliveries paused." in html and "last error: HTTP 502" in html, page
        assert "3 failed attempts in a row since" in html
        assert f'action="/p/{paused_owner}/endpoint/resume"' in html
        assert "Resume deliveries" in html
    # Another project of the team is not paused: no banner there, nor on pages of no project.
    r = client.post("/projects", data={"csrf_token": csrf_from(html), "name": "staging"})
    other = int(r.headers["Location"].split("/")[2])
    assert 'id="endpoint-banner"' not in client.get(f"/p/{other}/").get_data(as_text=True)
    assert 'id="endpoint-banner"' not in client.get("/account").get_data(as_text=True)


def test_the_job_page_shows_the_banner_too(tiny, client, paused_owner):
    with tiny.app_context():
        from dispatched import keys

        _, token = keys.issue_key(db.session.get(Project, paused_owner), "k")
    job_id = client.post(
        "/api/jobs/dispatch", headers={"Authorization": f"Bearer {token}"}, json={"payload": {}}
    ).json["jobId"]
    html = client.get(f"/p/{paused_owner}/jobs/{job_id}").get_data(as_text=True)
    assert 'id="endpoint-banner"' in html


def test_the_resume_button_resumes_and_returns_to_the_page(tiny, client, paused_owner):
    html = client.get(f"/p/{paused_owner}/jobs").get_data(as_text=True)
    assert f'name="next" value="/p/{paused_owner}/jobs"' in html
    r = client.post(
        f"/p/{paused_owner}/endpoint/resume",
        data={"csrf_token": csrf_from(html), "next": f"/p/{paused_owner}/jobs"},
    )
    assert r.status_code == 302 and r.headers["Location"] == f"/p/{paused_owner}/jobs"
    row = flow_row(tiny, paused_owner)
    assert row["endpoint_paused_at"] is None and row["slow_start"] is True
    html = client.get(f"/p/{paused_owner}/jobs").get_data(as_text=True)
    assert 'id="endpoint-banner"' not in html and "Deliveries resumed" in html


def test_the_resume_button_needs_the_csrf_token(tiny, client, paused_owner):
    r = client.post(f"/p/{paused_owner}/endpoint/resume", data={"next": "/"})
    assert r.status_code == 400
    assert flow_row(tiny, paused_owner)["endpoint_paused_at"] is not None


@pytest.mark.parametrize(
    "target", ["https://evil.example/", "//evil.example/", "/p/{}/..//evil", "/account", ""]
)
def test_the_resume_button_never_redirects_off_the_project(tiny, client, paused_owner, target):
    token = csrf_from(client.get(f"/p/{paused_owner}/").get_data(as_text=True))
    r = client.post(
        f"/p/{paused_owner}/endpoint/resume",
        data={"csrf_token": token, "next": target.format(paused_owner)},
    )
    assert r.status_code == 302 and r.headers["Location"] == f"/p/{paused_owner}/"


def test_another_teams_project_cannot_be_resumed(tiny, client, make_team):
    other = make_team("free")
    flow_row(tiny, other.project_id)
    record(tiny, other.project_id, E500, E500, E500)
    sign_up(client)
    token = csrf_from(client.get("/account").get_data(as_text=True))
    r = client.post(f"/p/{other.project_id}/endpoint/resume", data={"csrf_token": token})
    assert r.status_code == 404
    assert flow_row(tiny, other.project_id)["endpoint_paused_at"] is not None
