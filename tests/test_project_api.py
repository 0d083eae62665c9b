"""GET/PATCH /api/project and POST /api/project/resume (DESIGN.md §5, §9, §12): the shape, the
admin scope (403 FORBIDDEN before any body error), every validation rule with its status and
code, merge semantics of flowControl, and resuming a paused endpoint."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from dispatched import keys
from dispatched.extensions import db
from dispatched.models import Project, ProjectFlow

PROJECT = "/api/project"


@pytest.fixture()
def admin(app, make_team):
    """A pro team with an admin-scope key (headers) besides its default jobs key."""
    team = make_team("pro")
    with app.app_context():
        _, token = keys.issue_key(db.session.get(Project, team.project_id), "ops", keys.ADMIN)
    team.admin_headers = {"Authorization": f"Bearer {token}"}
    return team


def patch(client, headers, body):
    return client.patch(PROJECT, json=body, headers=headers)


def test_get_project_with_any_key(client, admin):
    for headers in (admin.headers, admin.admin_headers):
        r = client.get(PROJECT, headers=headers)
        assert r.status_code == 200
        assert r.json == {
            "projectId": admin.project_id,
            "name": "default",
            "webhookUrl": None,
            "flowControl": {"parallelism": 50, "ratePerSecond": None, "effectiveParallelism": 50},
            "endpoint": {"state": "active", "reason": None, "since": None},
        }
        assert r.headers["X-RateLimit-Limit"] == "600"


def test_get_project_without_a_key_is_401(client):
    r = client.get(PROJECT)
    assert r.status_code == 401
    assert r.json == {"error": "UNAUTHORIZED", "data": {"message": "Unauthorized"}}


def test_patch_and_resume_need_the_admin_scope_checked_before_the_body(client, admin):
    for body in ({"webhookUrl": "https://example.com/hook"}, {"nope": 1}, None):
        if body is None:
            r = client.patch(PROJECT, data="not json", headers=admin.headers)
        else:
            r = patch(client, admin.headers, body)
        assert r.status_code == 403, r.json
        assert r.json["error"] == "FORBIDDEN"
        assert r.json["data"]["requiredScope"] == "admin"
        assert "'admin' scope" in r.json["data"]["message"]
    r = client.post(f"{PROJECT}/resume", headers=admin.headers)
    assert r.status_code == 403 and r.json["error"] == "FORBIDDEN"
    assert client.get(PROJECT, headers=admin.headers).json["webhookUrl"] is None


def test_patch_webhook_url_and_flow_control(client, admin):
    r = patch(
        client,
        admin.admin_headers,
        {"webhookUrl": "https://example.com/hook", "flowControl": {"parallelism": 7}},
    )
    assert r.status_code == 200, r.json
    assert r.json["webhookUrl"] == "https://example.com/hook"
    assert r.json["flowControl"] == {
        "parallelism": 7,
        "ratePerSecond": None,
        "effectiveParallelism": 7,
    }
    # flowControl merges: a field left out stays.
    r = patch(client, admin.admin_headers, {"flowControl": {"ratePerSecond": 2.5}})
    assert r.json["flowControl"] == {
        "parallelism": 7,
        "ratePerSecond": 2.5,
        "effectiveParallelism": 7,
    }
    assert r.json["webhookUrl"] == "https://example.com/hook"
    # null resets a field to its default; an empty patch changes nothing.
    r = patch(client, admin.admin_headers, {"flowControl": {"parallelism": None}})
    assert r.json["flowControl"]["parallelism"] == 50 and r.json["flowControl"]["ratePerSecond"]
    assert patch(client, admin.admin_headers, {}).json == r.json
    # a null flowControl resets both; a null webhookUrl clears it.
    r = patch(client, admin.admin_headers, {"flowControl": None, "webhookUrl": None})
    assert r.json["flowControl"] == {
        "parallelism": 50,
        "ratePerSecond": None,
        "effectiveParallelism": 50,
    }
    assert r.json["webhookUrl"] is None
    assert client.get(PROJECT, headers=admin.headers).json == r.json


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"name": "prod"}, "name is read-only"),
        ({"projectId": 3}, "projectId is read-only"),
        ({"endpoint": {"state": "active"}}, "endpoint is read-only"),
        ({"webhook_url": "https://example.com"}, "unknown field 'webhook_url'"),
        ({"flowControl": {"effectiveParallelism": 3}}, "effectiveParallelism is read-only"),
        ({"flowControl": {"parallel": 3}}, "unknown field 'parallel'"),
        ({"flowControl": 5}, "flowControl must be an object"),
        ({"flowControl": [1]}, "flowControl must be an object"),
        ({"flowControl": {"parallelism": 51}}, "between 1 and 50"),
        ({"flowControl": {"parallelism": 0}}, "between 1 and 50"),
        ({"flowControl": {"parallelism": "5"}}, "parallelism must be an integer, got '5'"),
        ({"flowControl": {"parallelism": True}}, "parallelism must be an integer, got True"),
        ({"flowControl": {"parallelism": 2.5}}, "parallelism must be an integer, got 2.5"),
        ({"flowControl": {"ratePerSecond": 0}}, "ratePerSecond must be above 0"),
        ({"flowControl": {"ratePerSecond": -1}}, "ratePerSecond must be above 0"),
        ({"flowControl": {"ratePerSecond": 10_001}}, "at most 10000"),
        ({"flowControl": {"ratePerSecond": "fast"}}, "ratePerSecond must be a number"),
        ({"webhookUrl": ""}, "webhookUrl must be an http(s) URL, or null"),
        ({"webhookUrl": 7}, "webhookUrl must be an http(s) URL, or null"),
        ({"webhookUrl": "ftp://example.com/x"}, "must be an http(s) URL with a host"),
        ({"webhookUrl": "https://user:pw@example.com/"}, "must not contain credentials"),
        ({"webhookUrl": "https://" + "a" * 2050}, "longer than 2048"),
        (
            {"webhookUrl": "https://example.com/ok", "flowControl": {"parallelism": 999}},
            "between 1 and 50",
        ),
    ],
)
def test_patch_validation_is_400_and_saves_nothing(client, admin, body, message):
    before = client.get(PROJECT, headers=admin.headers).json
    r = patch(client, admin.admin_headers, body)
    assert r.status_code == 400, r.json
    assert r.json["error"] == "BAD_REQUEST"
    assert message in r.json["data"]["message"]
    assert client.get(PROJECT, headers=admin.headers).json == before


def test_patch_body_rules_415_and_400(client, admin):
    r = client.patch(PROJECT, data=json.dumps({}), headers=admin.admin_headers)
    assert r.status_code == 415 and r.json["error"] == "UNSUPPORTED_MEDIA_TYPE"
    r = client.patch(
        PROJECT, data="[]", headers={**admin.admin_headers, "Content-Type": "application/json"}
    )
    assert r.status_code == 400 and "must be a JSON object" in r.json["data"]["message"]


def test_patch_refuses_private_and_http_urls_where_the_install_does(app, client, admin):
    app.config["ALLOW_PRIVATE_WEBHOOKS"] = False
    app.config["ALLOW_HTTP_WEBHOOKS"] = False
    r = patch(client, admin.admin_headers, {"webhookUrl": "http://example.com/hook"})
    assert r.status_code == 400 and "is not https://" in r.json["data"]["message"]
    r = patch(client, admin.admin_headers, {"webhookUrl": "https://127.0.0.1/hook"})
    assert r.status_code == 400 and "private, loopback" in r.json["data"]["message"]
    r = patch(client, admin.admin_headers, {"webhookUrl": "https://169.254.169.254/latest"})
    assert r.status_code == 400


def test_paused_endpoint_is_shown_and_resumed(app, client, admin, redis):
    since = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    with app.app_context():
        row = db.session.get(ProjectFlow, admin.project_id)
        row.endpoint_paused_at = since
        row.endpoint_pause_reason = "50 failed attempts since 2026-11-27: HTTP 500"
        db.session.commit()
    r = client.get(PROJECT, headers=admin.headers)
    assert r.json["endpoint"] == {
        "state": "paused",
        "reason": "50 failed attempts since 2026-11-27: HTTP 500",
        "since": "2026-11-28T12:00:00.000Z",
    }
    r = client.post(f"{PROJECT}/resume", headers=admin.admin_headers)
    assert r.status_code == 200
    assert r.json["endpoint"] == {"state": "active", "reason": None, "since": None}
    assert int(redis.lpop("dispatched:wake")) == admin.project_id  # the release loop looks
    with app.app_context():
        row = db.session.get(ProjectFlow, admin.project_id)
        assert row.endpoint_paused_at is None and row.endpoint_pause_reason is None
        assert row.waiting
    # Resuming an active endpoint is a no-op with the same answer.
    again = client.post(f"{PROJECT}/resume", headers=admin.admin_headers)
    assert again.status_code == 200 and again.json == r.json
    # A body is ignored (nothing to send).
    assert (
        client.post(f"{PROJECT}/resume", data="x", headers=admin.admin_headers).status_code == 200
    )


def test_another_teams_admin_key_sees_only_its_own_project(app, client, admin, make_team):
    other = make_team("free")
    with app.app_context():
        _, token = keys.issue_key(db.session.get(Project, other.project_id), "ops", keys.ADMIN)
    r = patch(
        client,
        {"Authorization": f"Bearer {token}"},
        {"webhookUrl": "https://other.example.com/"},
    )
    assert r.json["projectId"] == other.project_id
    assert client.get(PROJECT, headers=admin.headers).json["webhookUrl"] is None


def test_project_routes_count_toward_the_rate_limit(app, client, make_team):
    team = make_team("tiny_rate")
    for _ in range(5):
        assert client.get(PROJECT, headers=team.headers).status_code == 200
    r = client.get(PROJECT, headers=team.headers)
    assert r.status_code == 429 and r.json["error"] == "RATE_LIMITED"
