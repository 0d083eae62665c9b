"""The Schedules pages in a real browser (Playwright, Debian's Chromium): the create form's
live preview (htmx) with its DST note, creating a schedule, under the CSP."""

from __future__ import annotations

import pytest

from tests.test_browser import browser, page, project_id, sign_up  # noqa: F401

pytestmark = pytest.mark.browser


def test_create_a_schedule_with_its_live_preview(app, live_server, page):  # noqa: F811
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
    page.fill("input[name=name]", "office hours ping")
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
