"""The dashboard in a real browser: Playwright driving Debian's Chromium.

Skipped only when Chromium is absent and ``CI`` is not set; in CI a missing browser fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import requests

from dispatched import webhooks
from dispatched.extensions import db
from dispatched.models import Job, Project, Team
from tests.support import answer, wait_for

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

pytestmark = pytest.mark.browser


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    if not shutil.which(CHROMIUM) and not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"Chromium not found at {CHROMIUM}; CI must run the browser tests")
        pytest.skip("Chromium is not installed (apt install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture()
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


def sign_up(page, base: str, email: str = "ada@example.com", team: str = "Analytical") -> None:
    page.goto(f"{base}/signup")
    page.fill("input[name=team]", team)
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", "difference-engine")
    page.click("button[type=submit]")
    page.wait_for_selector("svg.chart")


def project_id(app, team_name: str) -> int:
    with app.app_context():
        team = db.session.query(Team).filter_by(name=team_name).one()
        return team.projects[0].id


def create_key(page, base: str, pid: int) -> str:
    page.goto(f"{base}/p/{pid}/keys")
    page.fill("input[name=label]", "browser test")
    page.click("text=Create key")
    return page.inner_text("#new-token").strip()


def test_sign_up_log_out_and_log_in(app, live_server, page):
    sign_up(page, live_server)
    assert "Analytical" in page.inner_text("header")
    page.click("text=Log out")
    page.wait_for_url(re.compile(r".*/login$"))
    page.fill("input[name=email]", "ada@example.com")
    page.fill("input[name=password]", "wrong-password")
    page.click("button[type=submit]")
    assert "Wrong email or password" in page.inner_text("main")
    page.fill("input[name=email]", "ada@example.com")
    page.fill("input[name=password]", "difference-engine")
    page.click("button[type=submit]")
    page.wait_for_selector("svg.chart")
    assert "overview" in page.inner_text("h1")


def test_created_key_works_with_the_api(app, live_server, page):
    sign_up(page, live_server)
    token = create_key(page, live_server, project_id(app, "Analytical"))
    assert token.startswith("disp_k1_")
    r = requests.get(
        f"{live_server}/api/usage", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert r.status_code == 200 and r.json()["plan"] == "free"
    page.goto(f"{live_server}/p/{project_id(app, 'Analytical')}/keys")  # shown once only
    assert page.query_selector("#new-token") is None
    assert "browser test" in page.inner_text("#keys-table")


def test_jobs_table_updates_live_and_cancels(app, live_server, page, receiver, delivery_stack):
    sign_up(page, live_server)
    pid = project_id(app, "Analytical")
    with app.app_context():
        db.session.get(Project, pid).webhook_url = receiver.on("/hook", answer(200))
        db.session.commit()
    token = create_key(page, live_server, pid)
    headers = {"Authorization": f"Bearer {token}"}
    page.goto(f"{live_server}/p/{pid}/jobs")
    page.evaluate("window.__noReload = true")

    soon = (datetime.now(UTC) + timedelta(seconds=3)).isoformat()
    job_id = requests.post(
        f"{live_server}/api/jobs/dispatch",
        headers=headers,
        timeout=10,
        json={"payload": {"n": 1}, "scheduleFor": soon},
    ).json()["jobId"]
    row = f"#row-{job_id}"
    page.wait_for_selector(row)  # appears without a reload
    assert page.get_attribute(row, "data-status") == "QUEUED"
    page.wait_for_selector(f"{row}[data-status=COMPLETED]", timeout=20_000)  # changes live
    assert page.evaluate("window.__noReload") is True

    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    queued = requests.post(
        f"{live_server}/api/jobs/dispatch",
        headers=headers,
        timeout=10,
        json={"payload": {"n": 2}, "scheduleFor": later},
    ).json()["jobId"]
    page.wait_for_selector(f"#row-{queued}")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click(f"#row-{queued} >> text=Cancel")
    page.wait_for_selector(f"#row-{queued}[data-status=CANCELLED]")
    r = requests.get(f"{live_server}/api/jobs/{queued}", headers=headers, timeout=10)
    assert r.json()["status"] == "CANCELLED"
    assert page.evaluate("window.__noReload") is True


def test_job_page_shows_attempts(app, live_server, page, receiver, delivery_stack):
    sign_up(page, live_server)
    pid = project_id(app, "Analytical")
    flaky = receiver.on("/flaky", lambda n: (503 if n == 1 else 200, {}, b"ok", 0.0))
    with app.app_context():
        db.session.get(Project, pid).webhook_url = flaky
        db.session.commit()
    token = create_key(page, live_server, pid)
    job_id = requests.post(
        f"{live_server}/api/jobs/dispatch",
        timeout=10,
        headers={"Authorization": f"Bearer {token}"},
        json={"payload": {"order": 42}},
    ).json()["jobId"]
    page.goto(f"{live_server}/p/{pid}/jobs/{job_id}")
    assert '"order": 42' in page.inner_text("pre.json")
    # The panel refreshes itself while the job is live, until both attempts show.
    page.wait_for_selector(".timeline li.success", timeout=20_000)
    items = page.query_selector_all(".timeline li")
    assert len(items) == 2
    assert "HTTP 503" in items[0].inner_text() and "HTTP 200" in items[1].inner_text()
    assert "COMPLETED" in page.inner_text("h1")


def test_rotate_secret(app, live_server, page):
    sign_up(page, live_server)
    pid = project_id(app, "Analytical")
    with app.app_context():
        old = db.session.get(Project, pid).webhook_secret
    page.goto(f"{live_server}/p/{pid}/webhook")
    page.click("text=Reveal")
    assert page.inner_text("#secret") == old
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("text=Rotate")
    page.wait_for_selector("text=Secret rotated")
    new = page.inner_text("#secret")
    assert new.startswith("whsec_") and new != old
    with app.app_context():
        project = db.session.get(Project, pid)
        assert project.webhook_secret == new and project.previous_webhook_secret == old


def test_post_without_csrf_token_is_refused(app, live_server, page):
    sign_up(page, live_server)
    pid = project_id(app, "Analytical")
    page.goto(f"{live_server}/p/{pid}/keys")
    status = page.evaluate(
        """async (url) => (await fetch(url, {method: 'POST',
             headers: {'Content-Type': 'application/x-www-form-urlencoded'},
             body: 'label=forged'})).status""",
        f"{live_server}/p/{pid}/keys",
    )
    assert status == 400
    with app.app_context():
        from dispatched.models import ApiKey

        assert db.session.query(ApiKey).filter_by(label="forged").count() == 0
        assert db.session.query(Job).count() == 0


def test_phone_width_has_no_page_overflow(app, live_server, browser):
    context = browser.new_context(viewport={"width": 375, "height": 740})
    page = context.new_page()
    sign_up(page, live_server)
    pid = project_id(app, "Analytical")
    for path in ["/", "/jobs", "/schedules", "/keys", "/webhook", "/plan"]:
        page.goto(f"{live_server}/p/{pid}{path}")
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, (path, overflow)
    context.close()


def test_main_pages_run_under_the_csp_without_violations(app, live_server, page):
    """Every main page, its htmx actions and polling, with the CSP on: nothing is refused."""
    console: list[str] = []
    errors: list[str] = []
    page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # Also catch violations reported only as DOM events (init scripts run outside the CSP).
    page.add_init_script(
        "window.__csp = []; document.addEventListener('securitypolicyviolation',"
        " (e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"
    )

    def check(where: str) -> None:
        violations = [m for m in console if "Content Security Policy" in m or "Refused" in m]
        assert violations == [], (where, violations)
        assert page.evaluate("window.__csp") == [], where
        assert errors == [], (where, errors)

    page.goto(f"{live_server}/login")
    check("login")
    sign_up(page, live_server)
    check("sign-up")
    pid = project_id(app, "Analytical")
    assert page.evaluate("htmx.config.allowEval") is False
    assert page.evaluate("document.querySelectorAll('style').length") == 0  # no injected CSS
    meter = page.query_selector("svg.meter rect")
    assert meter is not None and meter.bounding_box()["width"] >= 0

    token = create_key(page, live_server, pid)
    page.click("#new-key button[data-copy]")
    page.wait_for_selector("#new-key button:has-text('Copied')")
    check("keys")
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    job_id = requests.post(
        f"{live_server}/api/jobs/dispatch",
        headers={"Authorization": f"Bearer {token}"},
        json={"payload": {"csp": True}, "scheduleFor": later},
        timeout=10,
    ).json()["jobId"]
    page.goto(f"{live_server}/p/{pid}/jobs")
    page.wait_for_selector(f"#row-{job_id}")
    page.wait_for_timeout(2500)  # one htmx poll of the rows
    check("jobs")
    page.goto(f"{live_server}/p/{pid}/jobs/{job_id}")
    check("job")

    with app.app_context():
        db.session.get(Project, pid).webhook_url = "http://127.0.0.1:9/hook"
        db.session.commit()
    page.goto(f"{live_server}/p/{pid}/webhook")
    page.click("text=Reveal")
    page.wait_for_selector("#secret")
    page.click("#secret-box button[data-copy]")
    page.wait_for_selector("#secret-box button:has-text('Copied')")
    page.click("text=Send test event")  # no worker here: it stays queued, polled every second
    page.wait_for_selector("#test-result .test-event[data-state=waiting]")
    with page.expect_request(re.compile(r".*/webhook/test/test_\w+$")):
        pass
    for _ in range(6):  # the 7th test event of the minute is refused with the reason shown
        page.click("text=Send test event")
        page.wait_for_timeout(150)
    page.wait_for_selector("#test-result >> text=Too many test events")
    check("webhook")

    page.goto(f"{live_server}/p/{pid}/plan")
    page.goto(f"{live_server}/p/{pid}/nowhere")  # the HTML error page
    check("plan and error pages")


def test_create_a_schedule_with_its_live_preview(app, live_server, page):
    console: list[str] = []
    page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
    sign_up(page, live_server)
    pid = project_id(app, "Analytical")
    page.goto(f"{live_server}/p/{pid}")
    page.click("nav.tabs >> text=Schedules")
    page.wait_for_selector("#new-schedule")
    assert "No schedules yet" in page.inner_text("#schedules-table")

    # Sundays of March at 02:30 in New York: every run of 5 includes a second Sunday of
    # March, when 02:30 does not exist; the preview says so, whatever today's date.
    page.fill("input[name=timezone]", "America/New_York")
    page.fill("input[name=cron]", "30 2 * 3 SUN")
    page.wait_for_selector("#schedule-preview >> text=DST: shifted")
    items = page.query_selector_all("#schedule-preview li")
    assert len(items) == 5
    shifted = [i.inner_text() for i in items if "shifted" in i.inner_text()]
    assert shifted and all("03:00" in text and "EDT" in text for text in shifted)

    page.fill("input[name=cron]", "0 0 30 2 *")
    page.wait_for_selector("#schedule-preview >> text=never fires")
    assert "day-of-month" in page.inner_text("#schedule-preview")

    page.fill("input[name=cron]", "*/15 9-17 * * MON-FRI")
    page.wait_for_selector("#schedule-preview li")
    page.fill("#new-schedule input[name=name]", "office hours ping")
    page.fill("textarea[name=payload]", '{"ping": true}')
    page.click("text=Create schedule")
    page.wait_for_selector("text=Schedule created.")
    assert "office hours ping" in page.inner_text("h1")
    assert len(page.query_selector_all("#schedule-preview li")) == 5
    page.click("text=← Schedules")
    assert "office hours ping" in page.inner_text("#schedules-table")
    assert "America/New_York" in page.inner_text("#schedules-table")
    violations = [m for m in console if "Content Security Policy" in m or "Refused" in m]
    assert violations == []


@pytest.mark.slow
def test_signature_doctor_diagnoses_a_real_delivery(
    app, live_server, page, receiver, delivery_stack
):
    """The job page's doctor on a real delivery from worker.py, through htmx under the CSP."""
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if "Content Security" in m.text else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_up(page, live_server)
    pid = project_id(app, "Analytical")
    with app.app_context():
        webhooks.set_url(db.session.get(Project, pid), receiver.url("/hook"))
    token = create_key(page, live_server, pid)
    job_id = requests.post(
        f"{live_server}/api/jobs/dispatch",
        headers={"Authorization": f"Bearer {token}"},
        json={"payload": {"order": 42, "note": "café"}},
        timeout=10,
    ).json()["jobId"]
    got = wait_for(lambda: receiver.received("/hook"), timeout=30, message="the delivery")[0]
    header_block = "\n".join(f"{k}: {v}" for k, v in got.headers.items())

    page.goto(f"{live_server}/p/{pid}/jobs/{job_id}")
    page.fill("#doctor textarea[name=headers]", header_block)
    page.fill("#doctor textarea[name=body]", json.dumps(json.loads(got.body), indent=2))
    page.click("#doctor button[type=submit]")
    result = page.wait_for_selector("#doctor-result").inner_text()
    assert "BODY_CHANGED" in result and "same JSON encoded differently" in result
    assert "Compared with attempt #1" in result
    assert page.input_value("#doctor textarea[name=headers]") == header_block  # kept

    page.fill("#doctor textarea[name=body]", got.body.decode())
    page.click("#doctor button[type=submit]")
    page.wait_for_selector("#doctor-result p.flash.ok")
    result = page.inner_text("#doctor-result")
    assert "verify with the project's current secret and bearer token" in result
    assert "SIGNATURE_OK" in result and "BEARER_OK" in result
    assert errors == []


# --- the paused-endpoint banner (DESIGN.md §12) ---------------------------------------------


def pause(app, pid: int) -> None:
    """Pause the project's endpoint: two failures in a row with a threshold of two."""
    from dispatched import endpoint_health
    from dispatched.models import ProjectFlow
    from dispatched.outbound import Result

    app.config.update(ENDPOINT_PAUSE_AFTER_FAILURES=2, ENDPOINT_PAUSE_AFTER_HOURS=0)
    with app.app_context():
        if db.session.get(ProjectFlow, pid) is None:
            db.session.add(ProjectFlow(project_id=pid, streak=0, tokens=1.0, waiting=False))
            db.session.commit()
        error = Result("connection_error", 5, error="connection failed: refused")
        endpoint_health.record([(pid, error), (pid, error)], datetime.now(UTC))
        db.session.commit()


def test_banner_on_every_page_and_resume_under_the_csp(app, live_server, page):
    problems: list[str] = []
    page.on(
        "console",
        lambda msg: (
            problems.append(msg.text)
            if "Content Security Policy" in msg.text or "Refused" in msg.text
            else None
        ),
    )
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    sign_up(page, live_server)
    pid = project_id(app, "Analytical")
    pause(app, pid)
    for path in ["/", "/jobs", "/keys", "/webhook", "/plan"]:
        page.goto(f"{live_server}/p/{pid}{path}")
        banner = page.inner_text("#endpoint-banner")
        assert "Deliveries paused." in banner, path
        assert "2 failed attempts in a row since" in banner
        assert "last error: connection failed: refused" in banner
    page.click("#endpoint-banner button:has-text('Resume deliveries')")
    page.wait_for_selector("text=Deliveries resumed")
    assert page.url == f"{live_server}/p/{pid}/plan"  # back where the button was pressed
    assert page.query_selector("#endpoint-banner") is None
    assert problems == []


def test_banner_fits_a_phone(app, live_server, browser):
    context = browser.new_context(viewport={"width": 375, "height": 740})
    phone = context.new_page()
    sign_up(phone, live_server)
    pid = project_id(app, "Analytical")
    pause(app, pid)
    phone.goto(f"{live_server}/p/{pid}/jobs")
    assert phone.is_visible("#endpoint-banner button:has-text('Resume deliveries')")
    overflow = phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, overflow
    context.close()
