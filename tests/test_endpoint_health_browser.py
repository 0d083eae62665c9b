"""The paused-endpoint banner in a real browser (Playwright, Debian's Chromium): shown on every
page of the project, laid out on a phone, its Resume button works under the CSP."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dispatched import endpoint_health
from dispatched.extensions import db
from dispatched.models import ProjectFlow
from dispatched.outbound import Result
from tests.test_browser import browser, page, project_id, sign_up  # noqa: F401 (fixtures)

pytestmark = pytest.mark.browser


def pause(app, pid: int) -> None:
    app.config.update(ENDPOINT_PAUSE_AFTER_FAILURES=2, ENDPOINT_PAUSE_AFTER_HOURS=0)
    with app.app_context():
        if db.session.get(ProjectFlow, pid) is None:
            db.session.add(ProjectFlow(project_id=pid, streak=0, tokens=1.0, waiting=False))
            db.session.commit()
        error = Result("connection_error", 5, error="connection failed: refused")
        endpoint_health.record([(pid, error), (pid, error)], datetime.now(UTC))
        db.session.commit()


def test_banner_on_every_page_and_resume_under_the_csp(app, live_server, page):  # noqa: F811
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


def test_banner_fits_a_phone(app, live_server, browser):  # noqa: F811
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
