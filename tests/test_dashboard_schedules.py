"""The dashboard's Schedules pages through the test client: list, create with its preview,
validation messages, pause/resume/delete, the schedule page with its jobs and fires, tenancy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dispatched import schedules
from dispatched.extensions import db
from dispatched.models import Schedule
from tests.test_dashboard import csrf_from, owner, page_token, sign_up  # noqa: F401


def form(token, **fields):
    return {
        "csrf_token": token,
        "name": "nightly",
        "cron": "30 2 * * *",
        "timezone": "America/New_York",
        "payload": '{"report": "nightly"}',
        "max_retries": "",
        "catch_up": "none",
        **fields,
    }


def test_schedules_page_lists_and_creates(app, client, owner):  # noqa: F811
    url = f"/p/{owner}/schedules"
    page = client.get(url)
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "No schedules yet" in html and 'id="schedule-preview"' in html
    assert '<option value="Australia/Lord_Howe">' in html  # time zone suggestions
    assert "Schedules" in html and "0 of 5" in html
    r = client.post(url, data=form(csrf_from(html)), follow_redirects=True)
    assert r.status_code == 200
    html = r.get_data(as_text=True)
    assert "Schedule created." in html and "nightly" in html
    assert "02:30" in html and "America/New_York" in html
    with app.app_context():
        [schedule] = db.session.query(Schedule).all()
        assert schedule.payload == {"report": "nightly"} and schedule.max_retries == 3
    listing = client.get(url).get_data(as_text=True)
    assert f"schedule-{schedule.id}" in listing and "1 of 5" in listing


def test_live_preview_partial_shows_dst_notes_and_errors(client, owner):  # noqa: F811
    url = f"/p/{owner}/schedules/preview"
    html = client.get(url, query_string={"cron": "*/15 * * * *", "timezone": "UTC"}).get_data(
        as_text=True
    )
    assert html.count("<li") == 5 and "UTC" in html
    html = client.get(url, query_string={"cron": "0 0 30 2 *", "timezone": "UTC"}).get_data(
        as_text=True
    )
    assert "never fires" in html and "day-of-month" in html
    html = client.get(url, query_string={"cron": "@daily", "timezone": "Nowhere"}).get_data(
        as_text=True
    )
    assert "not an IANA time zone name" in html


def test_preview_marks_a_shifted_fire(app, client, owner):  # noqa: F811
    with app.test_request_context():
        fires = schedules.preview(
            "30 2 * * *", "Europe/Berlin", 2, datetime(2026, 3, 28, 12, tzinfo=UTC)
        )
    assert [f.dst for f in fires] == ["shifted", None]
    page = client.get(f"/p/{owner}/schedules/preview?cron=30+2+*+*+*&timezone=Europe/Berlin")
    assert page.status_code == 200


def test_create_form_shows_the_services_messages(client, owner):  # noqa: F811
    url = f"/p/{owner}/schedules"
    for fields, message in [
        ({"cron": "0 0 30 2 *"}, "never fires"),
        ({"timezone": "Mars/Base"}, "not an IANA time zone name"),
        ({"payload": "[1, 2]"}, "payload must be a JSON object"),
        ({"payload": "{oops"}, "not valid JSON"),
        ({"max_retries": "many"}, "maxRetries must be an integer"),
    ]:
        r = client.post(url, data=form(page_token(client, url), **fields))
        assert r.status_code == 400, fields
        html = r.get_data(as_text=True)
        assert "Not created" in html and message in html
        assert "No schedules yet" in html


def test_plan_cap_is_shown_on_the_form(client, owner):  # noqa: F811
    url = f"/p/{owner}/schedules"
    for _ in range(5):
        client.post(url, data=form(page_token(client, url)))
    r = client.post(url, data=form(page_token(client, url)))
    assert r.status_code == 409
    assert "the free plan allows 5 schedules" in r.get_data(as_text=True)


def test_schedule_page_actions_jobs_and_fires(app, client, owner):  # noqa: F811
    url = f"/p/{owner}/schedules"
    client.post(url, data=form(page_token(client, url), cron="* * * * *", timezone="UTC"))
    with app.app_context():
        schedule = db.session.query(Schedule).one()
        sid = schedule.id
        due = schedule.next_fire_at
        schedules.fire_due(due + timedelta(milliseconds=10))
    page = client.get(f"{url}/{sid}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "Recent jobs" in html and "job_" in html and "created" in html
    assert html.count('<li data-at="') == 5  # next fires

    r = client.post(
        f"{url}/{sid}/pause", data={"csrf_token": csrf_from(html)}, follow_redirects=True
    )
    assert "Schedule paused." in r.get_data(as_text=True) and "paused" in r.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(Schedule, sid).next_fire_at is None
    token = page_token(client, f"{url}/{sid}")
    r = client.post(f"{url}/{sid}/resume", data={"csrf_token": token, "back": "list"})
    assert r.status_code == 302 and r.headers["Location"].endswith(url)
    token = page_token(client, f"{url}/{sid}")
    r = client.post(f"{url}/{sid}/delete", data={"csrf_token": token}, follow_redirects=True)
    assert "Schedule deleted" in r.get_data(as_text=True)
    assert client.get(f"{url}/{sid}").status_code == 404


def test_actions_need_csrf_and_other_teams_get_404(app, client, owner):  # noqa: F811
    url = f"/p/{owner}/schedules"
    client.post(url, data=form(page_token(client, url)))
    with app.app_context():
        sid = db.session.query(Schedule).one().id
    assert client.post(f"{url}/{sid}/pause", data={}).status_code == 400
    other = app.test_client()
    sign_up(other, email="mallory@example.com", team="Other")
    assert other.get(url).status_code == 404
    assert other.get(f"{url}/{sid}").status_code == 404
    token = page_token(other, "/")
    assert other.post(f"{url}/{sid}/delete", data={"csrf_token": token}).status_code == 404
