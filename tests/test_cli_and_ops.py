"""Admin CLI (DESIGN.md §8) and the health endpoints."""

from __future__ import annotations

import json
import re

import pytest
from redis import Redis

from dispatched.errors import BadRequest, NotFound
from dispatched.transport_rq import SCHEDULED_KEY
from tests.conftest import make_app
from tests.support import handed_over, wakes


def test_create_team_json_gives_a_working_key(runner, client):
    result = runner.invoke(args=["admin", "create-team", "Acme", "--plan", "pro", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert set(info) == {"team", "project", "apiKey", "webhookSecret", "webhookBearerToken"}
    assert info["team"]["plan"] == "pro" and info["project"]["name"] == "default"
    assert info["apiKey"].startswith("disp_k1_") and len(info["apiKey"]) >= 8 + 32
    assert info["webhookSecret"].startswith("whsec_")
    assert info["webhookBearerToken"].startswith("whbt_") and len(info["webhookBearerToken"]) > 40
    r = client.get("/api/usage", headers={"Authorization": f"Bearer {info['apiKey']}"})
    assert r.status_code == 200 and r.json["plan"] == "pro"


def test_create_team_rejects_unknown_plan_and_bad_url(runner):
    result = runner.invoke(args=["admin", "create-team", "Acme", "--plan", "gold"])
    assert result.exit_code == 1 and "unknown plan 'gold'" in result.output
    result = runner.invoke(args=["admin", "create-team", "Acme", "--webhook-url", "ftp://x"])
    assert result.exit_code == 1 and "http(s) URL" in result.output


def test_private_webhook_url_refused_unless_allowed(app, database_url, redis_url):
    from dispatched import teams
    from dispatched.errors import BadRequest

    strict = make_app(database_url, redis_url, ALLOW_PRIVATE_WEBHOOKS=False)
    with strict.app_context():
        for url in [
            "http://169.254.169.254/latest",
            "http://10.0.0.1/hook",
            "http://127.0.0.1:8000/hook",
            "http://100.64.1.1/",
            "http://[::1]/",
        ]:
            with pytest.raises(BadRequest, match="private, loopback or link-local"):
                teams.create_team("Acme", "free", url)
    with app.app_context():  # the test config allows private webhooks
        assert teams.create_team("Acme", "free", "http://127.0.0.1:9/x").project.webhook_url


def test_create_key_user_and_set_plan(runner, client):
    info = json.loads(runner.invoke(args=["admin", "create-team", "Acme", "--json"]).output)
    result = runner.invoke(args=["admin", "create-key", "Acme", "--label", "ci"])
    assert result.exit_code == 0
    token = result.output.strip()
    assert token.startswith("disp_k1_") and token != info["apiKey"]
    assert client.get("/api/jobs", headers={"Authorization": f"Bearer {token}"}).status_code == 200

    result = runner.invoke(
        args=["admin", "create-user", "Me@Example.com", "Acme"], input="correct horse battery\n"
    )
    assert result.exit_code == 0 and "me@example.com" in result.output
    again = runner.invoke(
        args=["admin", "create-user", "me@example.com", "Acme"], input="correct horse battery\n"
    )
    assert again.exit_code == 1 and "already exists" in again.output
    short = runner.invoke(args=["admin", "create-user", "x@example.com", "Acme"], input="short\n")
    assert short.exit_code == 1 and "12-200 characters" in short.output

    assert runner.invoke(args=["admin", "set-plan", "Acme", "scale"]).exit_code == 0
    usage = client.get("/api/usage", headers={"Authorization": f"Bearer {token}"}).json
    assert usage["plan"] == "scale" and usage["limit"] is None
    assert runner.invoke(args=["admin", "set-plan", "Nope", "scale"]).exit_code == 1


def test_seed_demo_is_repeatable_and_replaces_the_demo_key(runner, client):
    first = json.loads(runner.invoke(args=["admin", "seed-demo", "--json"]).output)
    second = json.loads(runner.invoke(args=["admin", "seed-demo", "--json"]).output)
    assert first["login"] == second["login"] and first["apiKey"] != second["apiKey"]
    assert re.search(r"/dev/echo/\d+$", second["webhookUrl"])
    old = client.get("/api/usage", headers={"Authorization": f"Bearer {first['apiKey']}"})
    new = client.get("/api/usage", headers={"Authorization": f"Bearer {second['apiKey']}"})
    assert old.status_code == 401 and new.status_code == 200


def test_seed_demo_refuses_a_bad_webhook_url_and_creates_nothing(app, runner):
    from dispatched import teams

    result = runner.invoke(args=["admin", "seed-demo", "--webhook-url", "ftp://x"])
    assert result.exit_code == 1 and "http(s) URL" in result.output
    with app.app_context():
        assert teams.find_user("demo@example.com") is None
        with pytest.raises(NotFound):
            teams.find_team("Demo team")
    assert runner.invoke(args=["admin", "seed-demo", "--json"]).exit_code == 0


def test_sign_up_with_a_bad_email_leaves_no_team(app):
    from dispatched import teams

    with app.app_context():
        with pytest.raises(BadRequest, match="invalid email"):
            teams.sign_up("not-an-email", "long enough password", "Orphan")
        with pytest.raises(NotFound):
            teams.find_team("Orphan")


def test_healthz_and_readyz(client):
    assert client.get("/healthz").json == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200
    assert r.json["checks"] == {"database": "ok", "redis": "ok"}


def test_readyz_503_when_redis_unreachable(database_url, redis_url):
    app = make_app(database_url, redis_url)
    app.extensions["dispatched.redis"] = Redis.from_url(
        "redis://127.0.0.1:1/0", socket_connect_timeout=0.2
    )
    r = app.test_client().get("/readyz")
    assert r.status_code == 503
    assert r.json["error"] == "SERVICE_UNAVAILABLE"
    assert r.json["data"]["checks"]["database"] == "ok"
    assert r.json["data"]["checks"]["redis"].startswith("unreachable")


def test_openapi_document_is_public_and_lists_every_route(app, client):
    doc = client.get("/api/openapi.json").json
    assert doc["openapi"].startswith("3.1")
    routes = {
        (
            rule.rule.replace("<job_id>", "{jobId}").replace("<schedule_id>", "{scheduleId}"),
            method.lower(),
        )
        for rule in app.url_map.iter_rules()
        if rule.endpoint.split(".")[0] in ("api", "ops") and rule.endpoint != "api.openapi"
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    documented = {
        (path, method)
        for path, ops in doc["paths"].items()
        for method in ops
        if method != "parameters"
    }
    assert routes == documented
    assert len(routes) == 26  # 15 job, project, usage and ops routes; 11 schedule routes


def test_admin_reconcile_hands_lost_jobs_back_to_redis(runner, client, team, redis, release_pass):
    from datetime import UTC, datetime, timedelta

    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    job_id = client.post(
        "/api/jobs/dispatch", json={"payload": {}, "scheduleFor": later}, headers=team.headers
    ).json["jobId"]
    now_id = client.post("/api/jobs/dispatch", json={"payload": {}}, headers=team.headers).json[
        "jobId"
    ]
    redis.flushdb()  # Redis restarted empty
    result = runner.invoke(args=["admin", "reconcile"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    # No epoch marker → a full pass; jobs younger than a few seconds are left to settle.
    assert report["full"] == 1 and report["rehanded"] == 0
    from dispatched import reconciler

    with runner.app.app_context():
        original = reconciler.SETTLE
        reconciler.SETTLE = timedelta(0)
        try:
            redis.delete(reconciler.EPOCH_KEY)
            report = reconciler.reconcile()
            # The later job is scheduled again; the due one (its wake-up was lost) is marked
            # waiting for the release loop.
            assert report["full"] == 1 and report["rehanded"] == 1 and report["waiting"] == 1
            # A second full pass finds Redis in agreement and schedules nothing.
            again = reconciler.reconcile(full=True)
            assert again["checked"] == 2 and again["rehanded"] == 0
        finally:
            reconciler.SETTLE = original
    assert redis.zscore(SCHEDULED_KEY, f"{job_id}-1") is not None
    assert wakes(redis) == []
    release_pass()  # no wake-up needed: the project is flagged waiting in SQL
    assert [attempts for _, attempts in handed_over(redis)] == [[[now_id, 1]]]
