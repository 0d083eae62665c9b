"""Security headers on every response (CSP, framing, sniffing, referrer, HSTS over https),
and templates the CSP can allow: no inline script, event handler or style attribute."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import make_app
from tests.test_dashboard import page_token, project_id_of, sign_up

EXPECTED = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def assert_secured(response) -> None:
    for name, value in EXPECTED.items():
        assert response.headers.get(name) == value, (name, response.headers.get(name))
    csp = dict(
        part.strip().split(" ", 1)
        for part in response.headers["Content-Security-Policy"].split(";")
    )
    assert csp["default-src"] == "'self'"
    assert csp["script-src"] == "'self'" and csp["style-src"] == "'self'"
    assert csp["frame-ancestors"] == "'none'" and csp["object-src"] == "'none'"
    assert csp["base-uri"] == "'self'" and csp["form-action"] == "'self'"
    assert "unsafe-inline" not in response.headers["Content-Security-Policy"]
    assert "unsafe-eval" not in response.headers["Content-Security-Policy"]


def test_dashboard_pages_send_the_headers(app, client):
    assert_secured(client.get("/login"))
    r = sign_up(client)
    assert r.status_code == 200
    assert_secured(r)
    pid = project_id_of(app, "Acme")
    for path in ["/", "/jobs", "/keys", "/webhook", "/plan"]:
        page = client.get(f"/p/{pid}{path}")
        assert page.status_code == 200, path
        assert_secured(page)
    assert_secured(client.get("/static/app.js"))


def test_api_responses_and_error_pages_send_the_headers(app, client, team):
    assert_secured(client.get("/api/usage", headers=team.headers))
    assert_secured(client.get("/api/openapi.json"))
    assert_secured(client.get("/healthz"))
    missing = client.get("/api/jobs/job_nope", headers=team.headers)
    assert missing.status_code == 404 and missing.is_json
    assert_secured(missing)
    assert_secured(client.get("/api/usage"))  # 401
    sign_up(client)
    page = client.get("/p/999999/jobs")  # another team's (or no) project: the HTML 404 page
    assert page.status_code == 404 and "<html" in page.get_data(as_text=True)
    assert_secured(page)


def test_an_internal_error_sends_the_headers(app, client):
    def boom() -> None:
        raise RuntimeError("boom")

    app.add_url_rule("/boom-for-test", "boom", boom)
    r = client.get("/boom-for-test")
    assert r.status_code == 500
    assert_secured(r)


def test_no_hsts_over_http(client):
    assert "Strict-Transport-Security" not in client.get("/healthz").headers


def test_hsts_when_public_url_is_https(database_url, redis_url, app):
    secure = make_app(database_url, redis_url, PUBLIC_URL="https://dispatched.example")
    r = secure.test_client().get("/healthz")
    assert r.headers["Strict-Transport-Security"] == "max-age=31536000"
    assert_secured(r)


INLINE = [
    (re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I), "inline <script>"),
    (re.compile(r"<[a-z][^>]*\son[a-z]+\s*=", re.I), "on* event handler attribute"),
    (re.compile(r"<[a-z][^>]*\sstyle\s*=", re.I), "style attribute"),
    (re.compile(r"<style[\s>]", re.I), "<style> element"),
    (re.compile(r"\bhx-on|\bhx-vals=['\"]\s*js:|javascript:", re.I), "script in an attribute"),
]


@pytest.fixture()
def pages(app, client, team) -> dict[str, str]:
    """The HTML of every dashboard page (with a key just created and a secret revealed)."""
    html = {"login": client.get("/login").get_data(as_text=True)}
    html["signup"] = client.get("/signup").get_data(as_text=True)
    sign_up(client)
    pid = project_id_of(app, "Acme")
    token = page_token(client, f"/p/{pid}/keys")
    created = client.post(f"/p/{pid}/keys", data={"csrf_token": token, "label": "ci"})
    html["new key"] = created.get_data(as_text=True)
    key = re.search(r'id="new-token">([^<]+)<', html["new key"]).group(1)
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    job = client.post(
        "/api/jobs/dispatch",
        headers={"Authorization": f"Bearer {key}"},
        json={"payload": {"n": 1}, "scheduleFor": later},
    ).json["jobId"]
    for path in ["/", "/jobs", "/keys", "/webhook", "/plan", f"/jobs/{job}"]:
        html[path.strip("/") or "overview"] = client.get(f"/p/{pid}{path}").get_data(as_text=True)
    html["secret"] = client.post(f"/p/{pid}/webhook/secret", data={"csrf_token": token}).get_data(
        as_text=True
    )
    html["404"] = client.get("/p/999999/").get_data(as_text=True)
    return html


def test_pages_have_no_inline_script_or_style(pages):
    for name, html in pages.items():
        assert "<html" in html, name
        for pattern, what in INLINE:
            match = pattern.search(html)
            assert match is None, f"{what} on the {name} page: {match and match.group(0)!r}"
    assert 'data-copy="new-token"' in pages["new key"] and 'data-copy="secret"' in pages["secret"]
    assert '"allowEval": false' in pages["overview"]
    assert '"includeIndicatorStyles": false' in pages["overview"]
