"""Dashboard pages through the test client: auth, CSRF, tenancy and every page's actions."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from dispatched.clock import parse_iso
from dispatched.extensions import db
from dispatched.models import Project


def csrf_from(html: str) -> str:
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html) or re.search(
        r'<meta name="csrf-token" content="([^"]+)"', html
    )
    assert match, "no CSRF token on the page"
    return match.group(1)


def sign_up(client, email="owner@example.com", team="Acme", password="correct-horse"):
    page = client.get("/signup")
    token = csrf_from(page.get_data(as_text=True))
    return client.post(
        "/signup",
        data={"csrf_token": token, "team": team, "email": email, "password": password},
        follow_redirects=True,
    )


def project_id_of(app, team_name: str) -> int:
    with app.app_context():
        from dispatched.models import Team

        team = db.session.query(Team).filter_by(name=team_name).one()
        return team.projects[0].id


@pytest.fixture()
def owner(app, client):
    r = sign_up(client)
    assert r.status_code == 200
    return project_id_of(app, "Acme")


def page_token(client, url: str) -> str:
    return csrf_from(client.get(url, follow_redirects=True).get_data(as_text=True))


def test_signup_logs_in_and_lands_on_overview(app, client):
    r = sign_up(client)
    html = r.get_data(as_text=True)
    assert r.status_code == 200 and "overview" in html and "Acme" in html
    assert "Jobs per day, last 30 days" in html and "<svg" in html
    cookie = next(c for c in r.headers.getlist("Set-Cookie") if c.startswith("session="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_signup_never_says_an_email_exists_and_rejects_short_passwords(client):
    sign_up(client)
    client.post("/logout", data={"csrf_token": page_token(client, "/")})
    again = sign_up(client)  # the neutral answer, on the login page: nobody was logged in
    html = again.get_data(as_text=True)
    assert "already exists" not in html and "If owner@example.com could be used" in html
    assert "<title>Log in · Dispatched</title>" in html
    short = sign_up(client, email="x@example.com", password="short")
    assert short.status_code == 400


def test_login_wrong_password_and_logout(app, client, owner):
    client.post("/logout", data={"csrf_token": page_token(client, f"/p/{owner}/")})
    assert client.get(f"/p/{owner}/").status_code == 302  # back to login
    token = page_token(client, "/login")
    bad = client.post(
        "/login", data={"csrf_token": token, "email": "owner@example.com", "password": "nope-nope"}
    )
    assert bad.status_code == 400 and "Wrong email or password" in bad.get_data(as_text=True)
    good = client.post(
        "/login",
        data={"csrf_token": token, "email": "OWNER@example.com", "password": "correct-horse"},
    )
    assert good.status_code == 302


def test_login_next_is_not_an_open_redirect(client, owner):
    client.post("/logout", data={"csrf_token": page_token(client, f"/p/{owner}/")})
    token = page_token(client, "/login")
    r = client.post(
        "/login?next=//evil.example/",
        data={"csrf_token": token, "email": "owner@example.com", "password": "correct-horse"},
    )
    assert r.status_code == 302 and "evil.example" not in r.headers["Location"]


def test_form_post_without_csrf_token_is_refused(app, client, owner):
    r = client.post(f"/p/{owner}/keys", data={"label": "sneaky"})
    assert r.status_code == 400 and "CSRF" in r.get_data(as_text=True)
    r = client.post(f"/p/{owner}/webhook/rotate", headers={"HX-Request": "true"})
    assert r.status_code == 400
    with app.app_context():
        from dispatched.models import ApiKey

        assert db.session.query(ApiKey).filter_by(label="sneaky").count() == 0


def test_create_key_shows_token_once_and_it_works(client, owner):
    token = page_token(client, f"/p/{owner}/keys")
    r = client.post(f"/p/{owner}/keys", data={"csrf_token": token, "label": "ci server"})
    assert r.status_code == 201
    html = r.get_data(as_text=True)
    api_key = re.search(r'<code id="new-token">(disp_k1_\w+)</code>', html).group(1)
    assert (
        client.get("/api/usage", headers={"Authorization": f"Bearer {api_key}"}).status_code == 200
    )
    listing = client.get(f"/p/{owner}/keys").get_data(as_text=True)
    assert "ci server" in listing and api_key not in listing  # shown once only
    assert api_key[:12] in listing


def test_revoke_key_from_the_page(app, client, owner):
    token = page_token(client, f"/p/{owner}/keys")
    html = client.post(f"/p/{owner}/keys", data={"csrf_token": token, "label": "temp"}).get_data(
        as_text=True
    )
    api_key = re.search(r'<code id="new-token">(disp_k1_\w+)</code>', html).group(1)
    key_id = int(re.findall(r'id="key-(\d+)"', html)[0])
    r = client.post(
        f"/p/{owner}/keys/{key_id}/revoke", headers={"HX-Request": "true", "X-CSRFToken": token}
    )
    assert r.status_code == 200 and "revoked" in r.get_data(as_text=True)
    assert (
        client.get("/api/usage", headers={"Authorization": f"Bearer {api_key}"}).status_code == 401
    )


def test_webhook_url_is_validated_and_saved(app, client, owner, database_url, redis_url):
    token = page_token(client, f"/p/{owner}/webhook")
    bad = client.post(f"/p/{owner}/webhook", data={"csrf_token": token, "url": "ftp://nope"})
    assert bad.status_code == 400 and "http(s) URL" in bad.get_data(as_text=True)
    ok = client.post(
        f"/p/{owner}/webhook", data={"csrf_token": token, "url": "http://127.0.0.1:9/hook"}
    )
    assert ok.status_code == 302
    with app.app_context():
        assert db.session.get(Project, owner).webhook_url == "http://127.0.0.1:9/hook"
    app.config["ALLOW_PRIVATE_WEBHOOKS"] = False
    refused = client.post(
        f"/p/{owner}/webhook", data={"csrf_token": token, "url": "http://169.254.169.254/"}
    )
    assert refused.status_code == 400 and "private" in refused.get_data(as_text=True)


def test_rotate_secret_keeps_previous(app, client, owner):
    with app.app_context():
        old = db.session.get(Project, owner).webhook_secret
    token = page_token(client, f"/p/{owner}/webhook")
    r = client.post(
        f"/p/{owner}/webhook/rotate", headers={"HX-Request": "true", "X-CSRFToken": token}
    )
    assert r.status_code == 200
    new = re.search(r'<code id="secret">(whsec_[^<]+)</code>', r.get_data(as_text=True)).group(1)
    with app.app_context():
        project = db.session.get(Project, owner)
        assert project.webhook_secret == new != old
        assert project.previous_webhook_secret == old


def test_bearer_token_is_revealed_and_rotated_at_once(app, client, owner):
    with app.app_context():
        project = db.session.get(Project, owner)
        old, secret = project.webhook_bearer_token, project.webhook_secret
    page = client.get(f"/p/{owner}/webhook").get_data(as_text=True)
    assert old not in page and secret not in page  # neither is on the page until revealed
    token = csrf_from(page)
    htmx = {"HX-Request": "true", "X-CSRFToken": token}
    shown = client.post(f"/p/{owner}/webhook/bearer-token", headers=htmx)
    assert shown.status_code == 200 and old in shown.get_data(as_text=True)
    assert secret not in shown.get_data(as_text=True)
    rotated = client.post(f"/p/{owner}/webhook/bearer-token/rotate", headers=htmx)
    assert rotated.status_code == 200
    new = re.search(r'<code id="bearer-token">(whbt_[^<]+)</code>', rotated.get_data(as_text=True))
    with app.app_context():
        project = db.session.get(Project, owner)
        # No overlap: the new token replaces the old one; the signing secret is untouched.
        assert project.webhook_bearer_token == new.group(1) != old
        assert project.webhook_secret == secret and project.previous_webhook_secret is None
    # Without JavaScript: the whole page, with the new token shown.
    plain = client.post(f"/p/{owner}/webhook/bearer-token/rotate", data={"csrf_token": token})
    assert plain.status_code == 200 and "Bearer token replaced" in plain.get_data(as_text=True)
    # CSRF-protected like every form.
    assert client.post(f"/p/{owner}/webhook/bearer-token/rotate").status_code == 400


def test_jobs_table_filters_and_actions(app, client, owner, pull_pass, release_pass):
    with app.app_context():
        from dispatched import keys

        _, api_key = keys.create_key(db.session.get(Project, owner), "t")
        db.session.commit()
    headers = {"Authorization": f"Bearer {api_key}"}
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    queued = client.post(
        "/api/jobs/dispatch", json={"payload": {"a": 1}, "scheduleFor": later}, headers=headers
    ).json["jobId"]
    now = client.post("/api/jobs/dispatch", json={"payload": {"b": 2}}, headers=headers).json[
        "jobId"
    ]
    pull_pass(room=0)  # no worker has a free thread: the release loop hands it over
    release_pass()  # the job due now leaves QUEUED
    rows = client.get(f"/p/{owner}/jobs/rows").get_data(as_text=True)
    assert queued in rows and now in rows and rows.strip().startswith("<tbody")
    only = client.get(f"/p/{owner}/jobs/rows?status=QUEUED").get_data(as_text=True)
    assert queued in only and now not in only
    found = client.get(f"/p/{owner}/jobs/rows?q={now[:10]}").get_data(as_text=True)
    assert now in found
    token = page_token(client, f"/p/{owner}/jobs")
    r = client.post(
        f"/p/{owner}/jobs/{queued}/cancel",
        headers={"HX-Request": "true", "HX-Target": f"row-{queued}", "X-CSRFToken": token},
    )
    assert r.status_code == 200 and "CANCELLED" in r.get_data(as_text=True)
    page = client.get(f"/p/{owner}/jobs/{now}").get_data(as_text=True)
    assert "&#34;b&#34;: 2" in page or '"b": 2' in page
    assert "No attempts yet" in page


#: Each page of a project (the path after ``/p/<id>/``) and the ``<title>`` it must carry.
PROJECT_PAGES = {
    "": "Overview",
    "jobs": "Jobs",
    "keys": "API keys",
    "webhook": "Webhook",
    "plan": "Plan",
}


def test_pages_render_for_the_owner(client, owner):
    home = client.get("/")
    assert home.status_code == 302 and home.headers["Location"] == f"/p/{owner}/"
    for page, title in PROJECT_PAGES.items():
        path = f"/p/{owner}/{page}"
        r = client.get(path)  # no redirect following: a bounce to the login page fails here
        html = r.get_data(as_text=True)
        assert r.status_code == 200, path
        assert f"<title>{title} · Dispatched</title>" in html, path
        assert 'aria-current="page"' in html and "Log out" in html, path


def test_pages_send_a_logged_out_client_to_login(app, client, owner):
    client.post("/logout", data={"csrf_token": page_token(client, f"/p/{owner}/")})
    for visitor in (client, app.test_client()):  # logged out, and never logged in
        home = visitor.get("/")
        assert home.status_code == 302 and home.headers["Location"] == "/login"
        for page in PROJECT_PAGES:
            path = f"/p/{owner}/{page}"
            r = visitor.get(path)
            assert r.status_code == 302, path
            location = urlsplit(r.headers["Location"])
            assert location.path == "/login" and parse_qs(location.query) == {"next": [path]}
            html = visitor.get(r.headers["Location"]).get_data(as_text=True)
            assert "<title>Log in · Dispatched</title>" in html and "Acme" not in html


def test_another_team_gets_404_everywhere(app, client, owner):
    with app.app_context():
        from dispatched import keys

        project = db.session.get(Project, owner)
        key, api_key = keys.create_key(project, "victim")
        db.session.commit()
        key_id = key.id
    job_id = client.post(
        "/api/jobs/dispatch", json={"payload": {}}, headers={"Authorization": f"Bearer {api_key}"}
    ).json["jobId"]
    other = app.test_client()
    sign_up(other, email="intruder@example.com", team="Other")
    token = page_token(other, "/")
    for method, path in [
        ("get", f"/p/{owner}/jobs/{job_id}"),
        ("get", f"/p/{owner}/jobs"),
        ("get", f"/p/{owner}/webhook"),
        ("post", f"/p/{owner}/webhook"),
        ("post", f"/p/{owner}/keys/{key_id}/revoke"),
        ("post", f"/p/{owner}/jobs/{job_id}/cancel"),
        ("post", f"/p/{owner}/webhook/bearer-token"),
        ("post", f"/p/{owner}/webhook/bearer-token/rotate"),
    ]:
        r = getattr(other, method)(path, data={"csrf_token": token, "url": "http://x.test/"})
        assert r.status_code == 404, (method, path)
        assert "404" in r.get_data(as_text=True)
    # Their own project id, with the victim's job or key: still 404.
    own = project_id_of(app, "Other")
    assert other.get(f"/p/{own}/jobs/{job_id}").status_code == 404
    assert (
        other.post(f"/p/{own}/keys/{key_id}/revoke", data={"csrf_token": token}).status_code == 404
    )
    assert (
        client.get("/api/usage", headers={"Authorization": f"Bearer {api_key}"}).status_code == 200
    )  # the key still works: nothing was revoked


def test_signup_can_be_switched_off(app, client):
    app.config["SIGNUP_ENABLED"] = False
    assert client.get("/signup").status_code == 404


def test_job_page_reschedule_and_replay(app, client, owner):
    from dispatched import keys
    from dispatched.models import Job

    with app.app_context():
        _, api_key = keys.create_key(db.session.get(Project, owner), "t")
        db.session.commit()
    headers = {"Authorization": f"Bearer {api_key}"}
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    job_id = client.post(
        "/api/jobs/dispatch", json={"payload": {}, "scheduleFor": later}, headers=headers
    ).json["jobId"]
    token = page_token(client, f"/p/{owner}/jobs/{job_id}")
    url = f"/p/{owner}/jobs/{job_id}"
    bad = client.post(
        f"{url}/reschedule",
        data={"csrf_token": token, "when": "tomorrow"},
        headers={"HX-Request": "true"},
    )
    assert "Not rescheduled" in bad.get_data(as_text=True)
    target = (datetime.now(UTC) + timedelta(hours=5)).replace(microsecond=0)
    ok = client.post(
        f"{url}/reschedule",
        data={"csrf_token": token, "when": target.isoformat()},
        headers={"HX-Request": "true"},
    )
    assert "Job rescheduled" in ok.get_data(as_text=True)
    assert (
        client.get(f"/api/jobs/{job_id}", headers=headers)
        .json["scheduledFor"]
        .startswith(target.strftime("%Y-%m-%dT%H:%M:%S"))
    )
    refused = client.post(f"{url}/replay", data={"csrf_token": token})
    assert refused.status_code == 302
    assert "Not replayed" in client.get(url).get_data(as_text=True)
    with app.app_context():
        job = db.session.get(Job, job_id)
        job.status, job.attempts = "FAILED", 4
        db.session.commit()
    replayed = client.post(
        f"{url}/replay", data={"csrf_token": token}, headers={"HX-Request": "true"}
    )
    assert "fresh retry budget" in replayed.get_data(as_text=True)
    replayed_job = client.get(f"/api/jobs/{job_id}", headers=headers).json
    assert replayed_job["status"] == "QUEUED" and replayed_job["attempts"] == 4
    assert parse_iso(replayed_job["nextAttemptAt"]) <= datetime.now(UTC)
    assert (
        client.post(f"/p/{owner}/jobs/job_nope/replay", data={"csrf_token": token}).status_code
        == 404
    )


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/",
        "/\\evil.example",
        "/\\\\evil.example",
        "/\t/evil.example",
        "https://evil.example/",
        "/%2F%2Fevil.example",
    ],
)
def test_login_next_rejects_every_offsite_form(client, owner, target):
    from urllib.parse import quote

    client.post("/logout", data={"csrf_token": page_token(client, f"/p/{owner}/")})
    token = page_token(client, "/login")
    r = client.post(
        f"/login?next={quote(target)}",
        data={"csrf_token": token, "email": "owner@example.com", "password": "correct-horse"},
    )
    assert r.status_code == 302
    location = r.headers["Location"]
    assert "evil.example" not in location or location.startswith("/%2F"), location


def test_echo_receiver_keeps_deliveries_per_project(app, client, owner):
    other = app.test_client()
    sign_up(other, email="other@example.com", team="Other")
    other_pid = project_id_of(app, "Other")
    assert client.post(f"/dev/echo/{owner}", json={"secret": "mine"}).status_code == 200
    assert client.post(f"/dev/echo/{other_pid}", json={"x": 1}).status_code == 200
    assert client.get("/dev/echo").status_code in (404, 405)  # no public reader
    token = page_token(client, f"/p/{owner}/webhook")
    client.post(
        f"/p/{owner}/webhook",
        data={"csrf_token": token, "url": f"http://127.0.0.1:8000/dev/echo/{owner}"},
    )
    mine = client.get(f"/p/{owner}/webhook").get_data(as_text=True)
    theirs = other.get(f"/p/{other_pid}/webhook").get_data(as_text=True)
    assert "mine" in mine and "mine" not in theirs


def test_key_and_project_forms_reject_bad_input(app, client, owner):
    from dispatched.models import ApiKey

    token = page_token(client, f"/p/{owner}/keys")
    r = client.post(f"/p/{owner}/keys", data={"csrf_token": token, "label": ""})
    assert r.status_code == 400 and "Give the key a label" in r.get_data(as_text=True)
    r = client.post(f"/p/{owner}/keys", data={"csrf_token": token, "label": "x" * 121})
    assert r.status_code == 400
    with app.app_context():
        assert db.session.query(ApiKey).filter(ApiKey.label != "default").count() == 0

    bad = client.post("/projects", data={"csrf_token": token, "name": ""}, follow_redirects=True)
    assert "Give the project a name" in bad.get_data(as_text=True)
    dup = client.post(
        "/projects", data={"csrf_token": token, "name": "default"}, follow_redirects=True
    )
    assert "already has a project" in dup.get_data(as_text=True)
    ok = client.post("/projects", data={"csrf_token": token, "name": "staging"})
    assert ok.status_code == 302 and "/webhook" in ok.headers["Location"]
    assert "staging" in client.get(f"/p/{owner}/").get_data(as_text=True)
