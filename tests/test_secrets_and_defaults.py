"""Issue 10 (items 5, 6, 7, 9): the bearer token apart from the signing secret, production-safe
defaults, secrets encrypted at rest, replays against the quota, the metrics token.

Each test names the audit finding it fixes; before the fix the reproduction passed through.
"""

from __future__ import annotations

from datetime import UTC, datetime

from dispatched.extensions import db
from dispatched.models import Job
from tests.support import handed_over, wakes
from tests.test_dashboard import csrf_from

UNAUTHORIZED = {"error": "UNAUTHORIZED", "data": {"message": "Unauthorized"}}


def dispatch_now(client, team) -> str:
    r = client.post("/api/jobs/dispatch", headers=team.headers, json={"payload": {"n": 1}})
    assert r.status_code == 201, r.json
    return r.json["jobId"]


# --- Finding: replays bypassed the monthly quota ---------------------------------------------


def test_replays_count_toward_the_quota(app, client, make_team, redis):
    """The audit's reproduction: 12 replays on a tiny quota (10 jobs a month)."""
    team = make_team("tiny_quota")
    job_id = dispatch_now(client, team)  # 1 of 10

    def fail_it() -> None:
        with app.app_context():
            job = db.session.get(Job, job_id)
            job.status, job.last_error = "FAILED", "HTTP 500"
            db.session.commit()

    answers = []
    for _ in range(12):
        fail_it()
        redis.flushdb()
        answers.append(client.post(f"/api/jobs/{job_id}/replay", headers=team.headers))
    assert [r.status_code for r in answers] == [200] * 9 + [429] * 3
    refused = answers[-1]
    assert refused.json["error"] == "LIMIT_REACHED" and refused.json["data"]["limit"] == 10
    assert int(refused.headers["Retry-After"]) > 0
    usage = client.get("/api/usage", headers=team.headers).json
    assert usage["jobsThisMonth"] == 10
    # A refused replay changes nothing: the job stays FAILED and nothing is handed over.
    assert client.get(f"/api/jobs/{job_id}", headers=team.headers).json["status"] == "FAILED"
    assert handed_over(redis) == [] and wakes(redis) == []


def test_a_refused_replay_is_shown_on_the_dashboard(app, client, make_team, redis):
    from dispatched import plans, teams, usage

    team = make_team("tiny_quota")
    job_id = dispatch_now(client, team)
    with app.app_context():
        job = db.session.get(Job, job_id)
        job.status = "FAILED"
        for _ in range(9):
            usage.consume(team.team_id, plans.get("tiny_quota"), datetime.now(UTC))
        db.session.commit()
        teams.create_user("owner@example.com", "correct-horse", teams.find_team(str(team.team_id)))
    login = client.get("/login")
    client.post(
        "/login",
        data={
            "csrf_token": csrf_from(login.get_data(as_text=True)),
            "email": "owner@example.com",
            "password": "correct-horse",
        },
    )
    page = client.get(f"/p/{team.project_id}/jobs/{job_id}")
    assert page.status_code == 200
    r = client.post(
        f"/p/{team.project_id}/jobs/{job_id}/replay",
        data={"csrf_token": csrf_from(page.get_data(as_text=True))},
        follow_redirects=True,
    )
    assert "Not replayed: Monthly job limit reached" in r.get_data(as_text=True)
    assert client.get(f"/api/jobs/{job_id}", headers=team.headers).json["status"] == "FAILED"


# --- Finding: /metrics was public -------------------------------------------------------------


def test_metrics_are_open_without_a_metrics_token(client):
    r = client.get("/metrics")
    assert r.status_code == 200 and r.mimetype == "text/plain"


def test_metrics_need_the_metrics_token_when_it_is_set(app, client, team):
    app.config["METRICS_TOKEN"] = "metrics-token-0123456789"
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Bearer metrics-token-012345678"},  # a prefix
        {"Authorization": "Basic metrics-token-0123456789"},
        team.headers,  # an API key is not the metrics token
    ):
        r = client.get("/metrics", headers=headers)
        assert r.status_code == 401 and r.json == UNAUTHORIZED, headers
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    ok = client.get("/metrics", headers={"Authorization": "Bearer metrics-token-0123456789"})
    assert ok.status_code == 200 and "dispatched_jobs_total" in ok.get_data(as_text=True)
