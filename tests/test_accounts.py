"""Accounts (issue 10): revocable sessions, abuse limits, a sign-up that never tells whether an
email exists, password change, the sessions list, team members and invite links."""

from __future__ import annotations

import hashlib
import logging
import re
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from dispatched import accounts, teams
from dispatched.extensions import db, limiter
from dispatched.models import Invite, Team, User, UserSession
from tests.conftest import make_app

PASSWORD = "correct-horse-battery"
UA_FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
UA_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)


def csrf_from(html: str) -> str:
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html) or re.search(
        r'<meta name="csrf-token" content="([^"]+)"', html
    )
    assert match, "no CSRF token on the page"
    return match.group(1)


def token_of(client, url: str = "/login") -> str:
    return csrf_from(client.get(url, follow_redirects=True).get_data(as_text=True))


def sign_up(client, email="owner@example.com", team="Acme", password=PASSWORD, **kwargs):
    """POST the sign-up form; the response is not followed."""
    data = {"csrf_token": token_of(client, "/signup"), "team": team, "email": email}
    return client.post("/signup", data={**data, "password": password}, **kwargs)


def log_in(client, email="owner@example.com", password=PASSWORD, **kwargs):
    data = {"csrf_token": token_of(client), "email": email, "password": password}
    return client.post("/login", data=data, **kwargs)


def log_out(client) -> None:
    assert client.post("/logout", data={"csrf_token": token_of(client, "/")}).status_code == 302


def flashes(html: str) -> list[str]:
    return re.findall(r'<p class="flash[^"]*" role="status">([^<]*)</p>', html)


def first_project(app, team_name: str = "Acme") -> int:
    with app.app_context():
        team = db.session.execute(sa.select(Team).where(Team.name == team_name)).scalar_one()
        return team.projects[0].id


def user_id(app, email: str) -> int:
    with app.app_context():
        return db.session.execute(sa.select(User.id).where(User.email == email)).scalar_one()


def opens_pages(client, project_id: int) -> bool:
    r = client.get(f"/p/{project_id}/")
    assert r.status_code in (200, 302), r.status_code
    if r.status_code == 302:
        assert r.headers["Location"].startswith("/login")
    return r.status_code == 200


def with_cookie(app, name: str, value: str):
    other = app.test_client()
    other.set_cookie(name, value)
    return other


@pytest.fixture()
def owner(app, client) -> int:
    """Sign up owner@example.com (team Acme, logged in on ``client``); return its project id."""
    assert sign_up(client).status_code == 302
    return first_project(app)


def invite_link(client) -> str:
    r = client.post("/team/invites", data={"csrf_token": token_of(client, "/team")})
    assert r.status_code == 201, r.get_data(as_text=True)
    match = re.search(r'<code id="invite-link">[^<]*(/invite/[A-Za-z0-9]+)</code>', r.text)
    assert match, "no invite link on the page"
    return match.group(1)


def accept(client, link: str, email: str, password: str = PASSWORD, **kwargs):
    data = {"csrf_token": token_of(client, link), "email": email, "password": password}
    return client.post(link, data=data, **kwargs)


@pytest.fixture()
def member(app, client, owner):
    """A second client logged in as member@example.com, invited to Acme by the owner."""
    other = app.test_client()
    r = accept(other, invite_link(client), "member@example.com")
    assert r.status_code == 302 and opens_pages(other, owner)
    return other


# --- Sessions: a copied cookie stops working at logout -------------------------------------


def test_a_copied_session_cookie_no_longer_opens_pages_after_logout(app, client, owner):
    stolen = client.get_cookie("session").value
    assert opens_pages(with_cookie(app, "session", stolen), owner)  # it works before logout
    log_out(client)
    assert not opens_pages(with_cookie(app, "session", stolen), owner)
    assert not opens_pages(client, owner)


def test_a_copied_remember_cookie_no_longer_opens_pages_after_logout(app, client, owner):
    log_out(client)
    assert log_in(client).status_code == 302
    remember = client.get_cookie("remember_token").value
    assert opens_pages(with_cookie(app, "remember_token", remember), owner)
    log_out(client)
    assert not opens_pages(with_cookie(app, "remember_token", remember), owner)


def test_each_login_gets_its_own_remember_token_valid_30_days(app, client, owner):
    tokens = []
    for _ in range(2):
        log_out(client)
        r = log_in(client)
        cookie = next(c for c in r.headers.getlist("Set-Cookie") if c.startswith("remember_token="))
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
        tokens.append(client.get_cookie("remember_token").value)
        expires = client.get_cookie("remember_token").expires
        assert timedelta(days=29, hours=23) < expires - datetime.now(UTC) <= timedelta(days=30)
    assert tokens[0] != tokens[1]
    assert str(user_id(app, "owner@example.com")) not in {t.split("|")[0] for t in tokens}


def test_a_login_older_than_30_days_no_longer_opens_pages(app, client, owner):
    with app.app_context():
        db.session.execute(
            sa.update(UserSession).values(
                created_at=datetime.now(UTC) - timedelta(days=30, seconds=1)
            )
        )
        db.session.commit()
    assert not opens_pages(client, owner)


def test_the_csrf_token_rotates_at_login(app, client, owner):
    log_out(client)
    before = token_of(client)
    r = client.post(
        "/login", data={"csrf_token": before, "email": "owner@example.com", "password": PASSWORD}
    )
    assert r.status_code == 302
    stale = client.post(f"/p/{owner}/keys", data={"csrf_token": before, "label": "x"})
    assert stale.status_code == 400 and "CSRF" in stale.text
    fresh = client.post(
        f"/p/{owner}/keys", data={"csrf_token": token_of(client, "/"), "label": "x"}
    )
    assert fresh.status_code == 201


def test_last_seen_is_refreshed_coarsely(app, client, owner):
    old = datetime.now(UTC) - timedelta(minutes=1)
    with app.app_context():
        db.session.execute(sa.update(UserSession).values(last_seen_at=old))
        db.session.commit()
    assert opens_pages(client, owner)
    with app.app_context():
        seen = db.session.execute(sa.select(UserSession.last_seen_at)).scalar_one()
        assert seen == old  # younger than 5 minutes: no write
        db.session.execute(sa.update(UserSession).values(last_seen_at=old - timedelta(minutes=5)))
        db.session.commit()
    assert opens_pages(client, owner)
    with app.app_context():
        seen = db.session.execute(sa.select(UserSession.last_seen_at)).scalar_one()
        assert datetime.now(UTC) - seen < timedelta(seconds=30)


@pytest.mark.parametrize(
    ("header", "summary"),
    [
        (UA_FIREFOX, "Firefox on Linux"),
        (UA_IPHONE, "Safari on iOS"),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/126.0 Safari/537.36 Edg/126.0",
            "Edge on Windows",
        ),
        ("curl/8.5.0", "curl"),
        ("", "Unknown device"),
        (None, "Unknown device"),
    ],
)
def test_user_agents_are_summarized(header, summary):
    assert accounts.describe_user_agent(header) == summary


def test_sessions_list_and_log_out_other_sessions(app, client, owner):
    laptop, phone = app.test_client(), app.test_client()
    assert log_in(laptop, headers={"User-Agent": UA_FIREFOX}).status_code == 302
    assert log_in(phone, headers={"User-Agent": UA_IPHONE}).status_code == 302
    page = laptop.get("/account").text
    assert page.count("<tr") == 1 + 3  # header + this client, the sign-up one and the phone
    assert "Firefox on Linux" in page and "Safari on iOS" in page and "this session" in page
    assert "Log out other sessions" in page
    r = laptop.post("/account/sessions/revoke-others", data={"csrf_token": token_of(laptop, "/")})
    assert r.status_code == 302
    assert "Other sessions logged out: 2." in laptop.get("/account").text
    assert opens_pages(laptop, owner)
    assert not opens_pages(phone, owner) and not opens_pages(client, owner)


def test_log_out_one_session_and_another_users_session_is_404(app, client, owner):
    phone = app.test_client()
    assert log_in(phone, headers={"User-Agent": UA_IPHONE}).status_code == 302
    with app.app_context():
        phone_session = db.session.execute(
            sa.select(UserSession.id).where(UserSession.user_agent == "Safari on iOS")
        ).scalar_one()
    intruder = app.test_client()
    assert sign_up(intruder, email="intruder@example.com", team="Other").status_code == 302
    url = f"/account/sessions/{phone_session}/revoke"
    assert intruder.post(url, data={"csrf_token": token_of(intruder, "/")}).status_code == 404
    assert opens_pages(phone, owner)
    assert client.post(url, data={"csrf_token": token_of(client, "/")}).status_code == 302
    assert not opens_pages(phone, owner) and opens_pages(client, owner)
    assert client.post(url, data={"csrf_token": token_of(client, "/")}).status_code == 404


# --- Password change ---------------------------------------------------------------------------


def change_password(client, current=PASSWORD, new="a new long password", confirm=None):
    data = {"csrf_token": token_of(client, "/account"), "current": current, "new": new}
    return client.post("/account/password", data={**data, "confirm": confirm or new})


def test_change_password_logs_out_the_other_sessions(app, client, owner):
    phone = app.test_client()
    assert log_in(phone).status_code == 302
    r = change_password(client)
    assert r.status_code == 302
    assert "Password changed. Other sessions logged out: 1." in client.get("/account").text
    assert opens_pages(client, owner) and not opens_pages(phone, owner)
    assert log_in(phone).status_code == 400  # the old password is gone
    assert log_in(phone, password="a new long password").status_code == 302


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"current": "not my password"}, "the current password is wrong"),
        ({"new": "short pass"}, "Field must be between 12 and 200 characters long."),
        ({"confirm": "something else entirely"}, "the new passwords differ"),
        ({"current": ""}, "This field is required."),
    ],
)
def test_change_password_refuses_bad_input(app, client, owner, fields, message):
    phone = app.test_client()
    assert log_in(phone).status_code == 302
    r = change_password(client, **fields)
    assert r.status_code == 400 and message in r.text
    assert opens_pages(phone, owner)  # nothing changed
    log_out(client)
    assert log_in(client).status_code == 302


def test_password_changes_are_limited_per_user(app, client, owner):
    app.config["PASSWORD_LIMIT_PER_USER"] = "2/minute"
    for _ in range(2):
        assert change_password(client, current="wrong password!").status_code == 400
    r = change_password(client)
    assert r.status_code == 429 and "Too many attempts" in r.text
    assert "too many password changes" in r.text and "Retry-After" in r.headers
    log_out(client)
    assert log_in(client).status_code == 302  # the password did not change


# --- Abuse limits ------------------------------------------------------------------------------


def test_the_sixth_wrong_password_for_one_email_in_a_minute_is_refused(app, client, owner):
    other = app.test_client()
    assert sign_up(other, email="bystander@example.com", team="Other").status_code == 302
    log_out(other)
    log_out(client)
    for _ in range(5):
        assert log_in(client, password="wrong password").status_code == 400
    refused = log_in(client, password="wrong password")
    assert refused.status_code == 429
    assert "<title>429 Too many attempts · Dispatched</title>" in refused.text
    assert "too many failed logins for this email" in refused.text
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    right = log_in(client, email="OWNER@example.com ")  # the right password waits too
    assert right.status_code == 429
    assert log_in(other, email="bystander@example.com").status_code == 302  # others unaffected


def test_successful_logins_do_not_spend_the_email_budget(app, client, owner):
    for _ in range(6):
        log_out(client)
        assert log_in(client).status_code == 302


def test_logins_are_limited_per_client_address(app, client, owner):
    app.config["LOGIN_LIMIT_PER_ADDRESS"] = "3/minute"
    log_out(client)
    for n in range(3):
        assert log_in(client, email=f"nobody{n}@example.com").status_code == 400
    assert log_in(client, email="nobody9@example.com").status_code == 429
    assert log_in(client).status_code == 429
    elsewhere = {"REMOTE_ADDR": "192.0.2.7"}
    assert log_in(client, environ_base=elsewhere).status_code == 302


def test_sign_ups_and_invite_acceptances_share_a_budget_per_address(app, client):
    app.config["SIGNUP_LIMIT_PER_ADDRESS"] = "3/hour"
    assert sign_up(client).status_code == 302
    link = invite_link(client)
    visitor = app.test_client()
    assert sign_up(visitor, email="second@example.com", team="Two").status_code == 302
    assert accept(app.test_client(), link, "third@example.com").status_code == 302
    fourth = sign_up(app.test_client(), email="fourth@example.com", team="Four")
    assert fourth.status_code == 429 and "too many new accounts" in fourth.text
    assert accept(app.test_client(), invite_link(client), "fifth@example.com").status_code == 429
    with app.app_context():
        assert db.session.execute(sa.select(sa.func.count(User.id))).scalar_one() == 3


def test_client_address_comes_from_the_proxy_when_configured(app, database_url, redis_url):
    proxied = make_app(database_url, redis_url, PROXY_HOPS=1, LOGIN_LIMIT_PER_ADDRESS="2/minute")
    client = proxied.test_client()
    for n in range(2):
        forwarded = {"X-Forwarded-For": "198.51.100.1"}
        r = log_in(client, email=f"a{n}@example.com", headers=forwarded)
        assert r.status_code == 400
    assert log_in(client, headers={"X-Forwarded-For": "198.51.100.1"}).status_code == 429
    assert log_in(client, headers={"X-Forwarded-For": "198.51.100.2"}).status_code == 400


def test_limits_fall_back_to_memory_when_redis_is_down(app, database_url, redis_url):
    dead = make_app(database_url, redis_url, RATELIMIT_STORAGE_URI="redis://127.0.0.1:1/0")
    try:
        client = dead.test_client()
        assert sign_up(client).status_code == 302  # no 500: the sign-up goes through
        log_out(client)
        for _ in range(5):
            assert log_in(client, password="wrong password").status_code == 400
        assert log_in(client, password="wrong password").status_code == 429  # in this process
    finally:
        # The limiter is one object for every app of the session: the next test's app binds it
        # to the live Redis again, but nothing resets its "storage is dead" flag.
        limiter._storage_dead = False


# --- Sign-up: one answer whether or not the email exists ---------------------------------------


def test_sign_up_with_an_existing_email_answers_like_a_fresh_one(app, caplog):
    fresh = sign_up(app.test_client(), email="new@example.com", team="First")
    with caplog.at_level(logging.INFO, logger="dispatched.teams"):
        again = sign_up(
            app.test_client(), email="NEW@example.com", team="Second", password="another password"
        )
    assert (fresh.status_code, fresh.headers["Location"]) == (
        again.status_code,
        again.headers["Location"],
    )
    assert fresh.data == again.data
    assert "already" not in again.text
    assert any("sign-up with the email of user" in r.getMessage() for r in caplog.records)
    # The same words on the page each lands on (the fresh one is logged in, the other is not).
    client_fresh, client_again = app.test_client(), app.test_client()
    r1 = sign_up(client_fresh, email="newer@example.com", team="Third", follow_redirects=True)
    r2 = sign_up(client_again, email="newer@example.com", team="Fourth", follow_redirects=True)
    assert flashes(r1.text) == flashes(r2.text) and len(flashes(r1.text)) == 1
    assert "If newer@example.com could be used" in flashes(r2.text)[0]
    with app.app_context():
        names = set(db.session.execute(sa.select(Team.name)).scalars())
        assert names == {"First", "Third"}  # nothing created for the second tries
    assert log_in(app.test_client(), email="new@example.com").status_code == 302
    assert (
        log_in(app.test_client(), email="new@example.com", password="another password").status_code
        == 400
    )


def test_sign_up_errors_do_not_depend_on_the_email(app, client, owner):
    known = sign_up(app.test_client(), email="owner@example.com", password="short")
    unknown = sign_up(app.test_client(), email="nobody@example.com", password="short")
    assert known.status_code == unknown.status_code == 400
    assert flashes(known.text) == flashes(unknown.text)
    tokens = re.compile(r'value="[^"]*"|content="[^"]*"|"X-CSRFToken": "[^"]*"')
    assert tokens.sub("", known.text) == tokens.sub("", unknown.text)


# --- Team members and invites ------------------------------------------------------------------


def test_the_first_user_owns_the_team_and_the_cli_adds_members(app, client, owner, runner):
    page = client.get("/team").text
    assert "owner@example.com" in page and ">owner<" in page and "Create invite link" in page
    result = runner.invoke(
        args=["admin", "create-user", "cli@example.com", "Acme"], input=f"{PASSWORD}\n"
    )
    assert result.exit_code == 0, result.output
    with app.app_context():
        roles = dict(db.session.execute(sa.select(User.email, User.role)).all())
    assert roles == {"owner@example.com": "owner", "cli@example.com": "member"}


def test_an_invite_link_makes_a_member_and_works_once(app, client, owner):
    link = invite_link(client)
    with app.app_context():
        invite = db.session.execute(sa.select(Invite)).scalar_one()
        assert invite.token_hash == hashlib.sha256(link.rsplit("/", 1)[1].encode()).hexdigest()
        assert invite.expires_at - invite.created_at == timedelta(days=7)
    assert "Pending invite" in client.get("/team").text
    newcomer = app.test_client()
    page = newcomer.get(link)
    assert page.status_code == 200 and "Join Acme" in page.text
    r = accept(newcomer, link, "new.member@example.com", headers={"User-Agent": UA_FIREFOX})
    assert r.status_code == 302
    landing = newcomer.get(r.headers["Location"], follow_redirects=True).text
    assert "you have joined Acme" in landing and "Acme" in landing
    team = newcomer.get("/team").text
    assert "new.member@example.com" in team and ">member<" in team
    assert "Create invite link" not in team and "Remove" not in team
    assert "Pending invite" not in client.get("/team").text
    for visitor in (app.test_client(), newcomer):
        reused = visitor.get(link)
        assert reused.status_code == 410 and "already been used" in reused.text
    again = accept(app.test_client(), link, "someone.else@example.com")
    assert again.status_code == 410
    with app.app_context():
        assert db.session.execute(sa.select(sa.func.count(User.id))).scalar_one() == 2


def test_expired_withdrawn_and_unknown_invites_are_refused(app, client, owner):
    expired, withdrawn = invite_link(client), invite_link(client)
    with app.app_context():
        first = db.session.execute(sa.select(Invite).order_by(Invite.id)).scalars().first()
        first.expires_at = datetime.now(UTC) - timedelta(seconds=1)
        db.session.commit()
        withdrawn_id = db.session.execute(sa.select(sa.func.max(Invite.id))).scalar_one()
    r = client.post(
        f"/team/invites/{withdrawn_id}/revoke", data={"csrf_token": token_of(client, "/team")}
    )
    assert r.status_code == 302
    visitor = app.test_client()
    r = visitor.get(expired)
    assert r.status_code == 410 and "expired on" in r.text
    assert accept(visitor, withdrawn, "x@example.com").status_code == 410
    assert "withdrew this invite" in visitor.get(withdrawn).text
    assert visitor.get("/invite/not-a-real-token").status_code == 404
    with app.app_context():
        assert db.session.execute(sa.select(sa.func.count(User.id))).scalar_one() == 1


def test_invite_acceptance_refuses_bad_input_and_keeps_the_link(app, client, owner):
    link = invite_link(client)
    visitor = app.test_client()
    short = accept(visitor, link, "new@example.com", password="too short")
    assert short.status_code == 400 and "between 12 and 200" in short.text
    taken = accept(visitor, link, "owner@example.com")  # the same neutral answer as a fresh one
    assert taken.status_code == 302 and taken.headers["Location"] == "/"
    assert "If owner@example.com could be used" in visitor.get("/", follow_redirects=True).text
    assert accept(visitor, link, "new@example.com").status_code == 302  # still usable
    assert opens_pages(visitor, owner)


def test_owner_removes_a_member_whose_sessions_end(app, client, owner, member):
    remember = member.get_cookie("remember_token").value
    member_id = user_id(app, "member@example.com")
    r = client.post(
        f"/team/members/{member_id}/remove", data={"csrf_token": token_of(client, "/team")}
    )
    assert r.status_code == 302
    assert "member@example.com removed" in client.get("/team").text
    assert not opens_pages(member, owner)
    assert not opens_pages(with_cookie(app, "remember_token", remember), owner)
    assert log_in(app.test_client(), email="member@example.com").status_code == 400


def test_only_the_owner_invites_and_removes(app, client, owner, member):
    owner_id = user_id(app, "owner@example.com")
    token = token_of(member, "/team")
    assert member.post("/team/invites", data={"csrf_token": token}).status_code == 403
    denied = member.post(f"/team/members/{owner_id}/remove", data={"csrf_token": token})
    assert denied.status_code == 403 and "Only the team&#39;s owner" in denied.text
    invite_link(client)
    with app.app_context():
        invite_id = db.session.execute(sa.select(sa.func.max(Invite.id))).scalar_one()
    assert (
        member.post(f"/team/invites/{invite_id}/revoke", data={"csrf_token": token}).status_code
        == 403
    )
    myself = client.post(
        f"/team/members/{owner_id}/remove", data={"csrf_token": token_of(client, "/team")}
    )
    assert myself.status_code == 400 and "can&#39;t remove yourself" in myself.text
    assert opens_pages(client, owner) and opens_pages(member, owner)


def test_another_teams_members_and_invites_are_404(app, client, owner, member):
    invite_link(client)
    with app.app_context():
        invite_id = db.session.execute(sa.select(sa.func.max(Invite.id))).scalar_one()
    member_id = user_id(app, "member@example.com")
    intruder = app.test_client()
    assert sign_up(intruder, email="intruder@example.com", team="Other").status_code == 302
    token = token_of(intruder, "/team")
    page = intruder.get("/team").text
    assert "member@example.com" not in page and "owner@example.com" not in page
    for path in (f"/team/members/{member_id}/remove", f"/team/invites/{invite_id}/revoke"):
        r = intruder.post(path, data={"csrf_token": token})
        assert r.status_code == 404 and "404" in r.text, path
    assert opens_pages(member, owner)
    assert "Pending invite" in client.get("/team").text


def test_new_forms_refuse_a_missing_csrf_token(app, client, owner, member):
    link = invite_link(client)
    member_id = user_id(app, "member@example.com")
    posts = [
        (client, "/account/password", {"current": PASSWORD, "new": "x" * 12, "confirm": "x" * 12}),
        (client, "/account/sessions/revoke-others", {}),
        (client, "/account/sessions/1/revoke", {}),
        (client, "/team/invites", {}),
        (client, "/team/invites/1/revoke", {}),
        (client, f"/team/members/{member_id}/remove", {}),
        (app.test_client(), link, {"email": "csrf@example.com", "password": PASSWORD}),
        (
            app.test_client(),
            "/signup",
            {"email": "c@example.com", "password": PASSWORD, "team": "C"},
        ),
    ]
    for visitor, path, data in posts:
        r = visitor.post(path, data=data)
        assert r.status_code == 400 and "CSRF" in r.text, path
    assert opens_pages(member, owner)
    with app.app_context():
        assert db.session.execute(sa.select(sa.func.count(User.id))).scalar_one() == 2
        assert teams.find_user("csrf@example.com") is None


def test_account_pages_need_a_login(app, client, owner):
    log_out(client)
    for path in ("/account", "/team"):
        r = client.get(path)
        assert r.status_code == 302 and r.headers["Location"].startswith("/login"), path


def test_the_migration_makes_each_teams_first_user_its_owner(app):
    from flask_migrate import downgrade, upgrade

    with app.app_context():
        db.session.remove()
        downgrade(revision="5b7e2a9c41d0")
        try:
            with db.engine.begin() as conn:
                for team_id in (1, 2):
                    conn.execute(
                        sa.text(
                            "INSERT INTO teams (id, name, plan, created_at) "
                            "VALUES (:id, :name, 'free', CURRENT_TIMESTAMP)"
                        ),
                        {"id": team_id, "name": f"team {team_id}"},
                    )
                for uid, team_id in [(1, 1), (2, 1), (3, 2), (4, 1)]:
                    conn.execute(
                        sa.text(
                            "INSERT INTO users (id, email, password_hash, team_id, created_at) "
                            "VALUES (:id, :email, 'x', :team, CURRENT_TIMESTAMP)"
                        ),
                        {"id": uid, "email": f"u{uid}@example.com", "team": team_id},
                    )
        finally:
            upgrade()
        roles = dict(db.session.execute(sa.select(User.id, User.role)).all())
    assert roles == {1: "owner", 2: "member", 3: "owner", 4: "member"}
