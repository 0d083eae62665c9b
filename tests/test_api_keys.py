"""API keys: scopes (DESIGN.md §5) from the CLI and the dashboard, and the key lookup cache of
the ingest path (DESIGN.md §10): no database read for a known key, coarse last-use writes, and
a revoked key refused on its very next request on every node (two gunicorn processes)."""

from __future__ import annotations

import re
import socket
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from redis import Redis

from dispatched import keys, teams
from dispatched.extensions import db
from dispatched.models import ApiKey, Team
from tests.support import wait_for
from tests.test_dashboard import page_token


def test_create_key_scope_from_the_cli(runner, client):
    runner.invoke(args=["admin", "create-team", "Acme", "--json"])
    jobs_key = runner.invoke(args=["admin", "create-key", "Acme"]).output.strip()
    admin_key = runner.invoke(
        args=["admin", "create-key", "Acme", "--scope", "admin", "--label", "ops"]
    ).output.strip()
    body = {"flowControl": {"parallelism": 2}}
    r = client.patch("/api/project", json=body, headers={"Authorization": f"Bearer {jobs_key}"})
    assert r.status_code == 403 and r.json["error"] == "FORBIDDEN"
    r = client.patch("/api/project", json=body, headers={"Authorization": f"Bearer {admin_key}"})
    assert r.status_code == 200 and r.json["flowControl"]["parallelism"] == 2
    # An admin key does everything a jobs key does.
    r = client.post(
        "/api/jobs/dispatch", json={"payload": {}}, headers={"Authorization": f"Bearer {admin_key}"}
    )
    assert r.status_code == 201
    bad = runner.invoke(args=["admin", "create-key", "Acme", "--scope", "root"])
    assert bad.exit_code == 2 and "'root' is not one of 'jobs', 'admin'" in bad.output


def test_scope_is_validated_by_the_service(app):
    from dispatched.errors import BadRequest

    with app.app_context():
        created = teams.create_team("Acme")
        with pytest.raises(BadRequest, match="scope must be one of jobs, admin, got 'root'"):
            keys.create_key(created.project, "x", "root")
        assert keys.check_scope(None) == "jobs"


def test_dashboard_creates_keys_with_a_scope_and_lists_it(app, client):
    from tests.test_dashboard import project_id_of, sign_up

    sign_up(client)
    owner = project_id_of(app, "Acme")
    html = client.get(f"/p/{owner}/keys").get_data(as_text=True)
    assert '<select id="scope" name="scope">' in html
    assert '<option selected value="jobs">' in html and 'value="admin"' in html
    token = page_token(client, f"/p/{owner}/keys")
    r = client.post(
        f"/p/{owner}/keys", data={"csrf_token": token, "label": "deployer", "scope": "admin"}
    )
    assert r.status_code == 201
    admin_key = re.search(r'<code id="new-token">(disp_k1_\w+)</code>', r.get_data(as_text=True))
    r = client.patch(
        "/api/project",
        json={"webhookUrl": "https://example.com/h"},
        headers={"Authorization": f"Bearer {admin_key.group(1)}"},
    )
    assert r.status_code == 200
    # Without a scope the form takes the default, jobs.
    r = client.post(f"/p/{owner}/keys", data={"csrf_token": token, "label": "app"})
    assert r.status_code == 201
    listing = client.get(f"/p/{owner}/keys").get_data(as_text=True)
    rows = re.findall(
        r"<td>(deployer|app|default)</td>\s*<td><code>[^<]*</code></td>\s*"
        r'<td><span class="badge scope-(\w+)">',
        listing,
    )
    assert sorted(rows) == [("app", "jobs"), ("default", "jobs"), ("deployer", "admin")]
    bad = client.post(f"/p/{owner}/keys", data={"csrf_token": token, "label": "x", "scope": "root"})
    assert bad.status_code == 400 and "a scope (jobs or admin)" in bad.get_data(as_text=True)
    with app.app_context():
        assert db.session.query(ApiKey).filter_by(label="x").count() == 0


# --- the lookup cache ------------------------------------------------------------------------


def _statements(app):
    seen: list[str] = []

    def listener(conn, cursor, statement, *_):
        seen.append(statement)

    with app.app_context():
        sa.event.listen(db.engine, "before_cursor_execute", listener)
    return seen


def test_a_known_key_is_served_without_reading_the_database(app, client, team):
    # The first dispatch of the month also creates the team's counter row.
    assert client.post("/api/jobs/dispatch", json={"payload": {}}, headers=team.headers)
    seen = _statements(app)
    for _ in range(3):
        r = client.post("/api/jobs/dispatch", json={"payload": {}}, headers=team.headers)
        assert r.status_code == 201
    assert not [s for s in seen if "api_keys" in s]
    # One statement per dispatch on PostgreSQL: the quota count and the insert together
    # (no key lookup, no last-use write, no second transaction).
    with app.app_context():
        if db.engine.dialect.name == "postgresql":
            assert len(seen) == 3 and all(s.startswith("WITH counted") for s in seen), seen


def test_last_used_is_written_at_most_once_a_minute(app, client, team):
    with app.app_context():
        key = db.session.query(ApiKey).filter_by(project_id=team.project_id).one()
        assert key.last_used_at is None
    client.get("/api/usage", headers=team.headers)
    with app.app_context():
        first = db.session.get(ApiKey, key.id).last_used_at
        assert first is not None
    app.extensions[keys._CACHE].clear()  # even a fresh lookup does not write within the minute
    client.get("/api/usage", headers=team.headers)
    with app.app_context():
        assert db.session.get(ApiKey, key.id).last_used_at == first
        db.session.execute(
            sa.update(ApiKey)
            .where(ApiKey.id == key.id)
            .values(last_used_at=datetime.now(UTC) - timedelta(minutes=2))
        )
        db.session.commit()
    app.extensions[keys._CACHE].clear()
    client.get("/api/usage", headers=team.headers)
    with app.app_context():
        assert db.session.get(ApiKey, key.id).last_used_at > first


def test_revoked_key_is_refused_on_its_next_request(app, client, team):
    assert client.get("/api/usage", headers=team.headers).status_code == 200
    with app.app_context():
        key = db.session.query(ApiKey).filter_by(project_id=team.project_id).one()
        assert keys.revoke(key.id, [team.project_id])
    r = client.get("/api/usage", headers=team.headers)
    assert r.status_code == 401
    assert r.json == {"error": "UNAUTHORIZED", "data": {"message": "Unauthorized"}}


def test_plan_change_applies_on_the_next_request(app, client, team):
    assert client.get("/api/usage", headers=team.headers).json["plan"] == "free"
    with app.app_context():
        teams.set_plan(db.session.get(Team, team.team_id), "pro")
    r = client.get("/api/usage", headers=team.headers)
    assert r.json["plan"] == "pro" and r.headers["X-RateLimit-Limit"] == "600"


def test_cache_entries_expire(app, client, team, monkeypatch):
    monkeypatch.setattr(keys, "CACHE_TTL", 0.0)
    seen = _statements(app)
    for _ in range(3):
        assert client.get("/api/usage", headers=team.headers).status_code == 200
    assert len([s for s in seen if s.startswith("SELECT api_keys")]) == 3


def test_without_redis_the_database_answers_and_a_revocation_holds(app, client, team):
    assert client.get("/api/usage", headers=team.headers).status_code == 200  # cached
    real = app.extensions["dispatched.redis"]
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    app.extensions["dispatched.redis"] = dead
    try:
        seen = _statements(app)
        assert client.get("/api/usage", headers=team.headers).status_code == 200
        assert [s for s in seen if "api_keys" in s]  # looked up, not trusted from the cache
        with app.app_context():
            key = db.session.query(ApiKey).filter_by(project_id=team.project_id).one()
            keys.revoke(key.id, [team.project_id])  # cannot reach Redis to start a new epoch
        assert client.get("/api/usage", headers=team.headers).status_code == 401
    finally:
        app.extensions["dispatched.redis"] = real
    assert client.get("/api/usage", headers=team.headers).status_code == 401


def test_an_emptied_redis_invalidates_every_cache(app, client, team, redis):
    assert client.get("/api/usage", headers=team.headers).status_code == 200
    with app.app_context():
        db.session.execute(sa.update(ApiKey).values(revoked_at=datetime.now(UTC)))
        db.session.commit()  # revoked behind the app's back: the cache does not know yet
    assert client.get("/api/usage", headers=team.headers).status_code == 200
    redis.flushdb()  # Redis lost its data: no epoch, so nothing cached is trusted
    assert client.get("/api/usage", headers=team.headers).status_code == 401


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_revocation_reaches_every_node_on_its_next_request(app, make_team, processes):
    """Two gunicorn processes (two nodes) each cache the key; revoking it through the app
    makes each refuse it on its very next request."""
    team = make_team("unlimited")
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    nodes = []
    for name in ("web1", "web2"):
        port = _free_port()
        processes.start_command(
            name,
            [
                gunicorn,
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "1",
                "--threads",
                "4",
                "wsgi:app",
            ],
        )
        nodes.append(f"http://127.0.0.1:{port}")
    for node in nodes:
        wait_for(lambda n=node: _up(n), timeout=30, message=f"{node} up")

    def usage(node: str) -> int:
        return requests.get(f"{node}/api/usage", headers=team.headers, timeout=10).status_code

    for _ in range(3):
        assert [usage(n) for n in nodes] == [200, 200]
    # Both nodes serve the key from their caches: a revocation written behind the app's back
    # (no new epoch) is not seen...
    with app.app_context():
        key = db.session.query(ApiKey).filter_by(project_id=team.project_id).one()
        db.session.execute(
            sa.update(ApiKey).where(ApiKey.id == key.id).values(revoked_at=datetime.now(UTC))
        )
        db.session.commit()
    assert [usage(n) for n in nodes] == [200, 200]
    with app.app_context():
        db.session.execute(sa.update(ApiKey).where(ApiKey.id == key.id).values(revoked_at=None))
        db.session.commit()
        # ...while one through the app (the dashboard's and the CLI's path) is, at once.
        assert keys.revoke(key.id, [team.project_id])
    started = time.monotonic()
    assert [usage(n) for n in nodes] == [401, 401]
    assert time.monotonic() - started < 5
    # A plan change reaches both nodes the same way.
    other = make_team("free")
    with app.app_context():
        for node in nodes:
            r = requests.get(f"{node}/api/usage", headers=other.headers, timeout=10)
            assert r.json()["plan"] == "free"
        teams.set_plan(db.session.get(Team, other.team_id), "pro")
    for node in nodes:
        r = requests.get(f"{node}/api/usage", headers=other.headers, timeout=10)
        assert r.json()["plan"] == "pro" and r.headers["X-RateLimit-Limit"] == "600"


def _up(node: str) -> bool:
    try:
        return requests.get(f"{node}/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False
