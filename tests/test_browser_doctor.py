"""The job page's signature doctor in a real browser (Playwright, Debian's Chromium, the CSP
on), on a real delivery: worker.py sends a job to a receiver, the user pastes what it got."""

from __future__ import annotations

import json

import pytest
import requests

from dispatched import webhooks
from dispatched.extensions import db
from dispatched.models import Project
from tests.support import wait_for
from tests.test_browser import browser, create_key, page, project_id, sign_up  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_doctor_diagnoses_a_real_delivery_in_the_browser(
    app,
    live_server,
    page,  # noqa: F811
    receiver,
    delivery_stack,
):
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
