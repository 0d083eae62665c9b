"""The job page's signature doctor (the SDK's diagnosis, with the bytes the server sent)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest

from dispatched import keys, signing, webhooks
from dispatched.extensions import db
from dispatched.models import Attempt, Job, Project
from tests.test_dashboard import owner, page_token, sign_up  # noqa: F401  (fixture)

PAYLOAD = {"b": 1, "a": "ünïcode"}


@pytest.fixture()
def job_with_attempt(app, client, owner):  # noqa: F811
    """A job of the owner's project with one attempt, as the engine records it."""
    with app.app_context():
        project = db.session.get(Project, owner)
        _, api_key = keys.create_key(project, "t")
        db.session.commit()
    job_id = client.post(
        "/api/jobs/dispatch",
        json={"payload": PAYLOAD},
        headers={"Authorization": f"Bearer {api_key}"},
    ).json["jobId"]
    sent_at = int(time.time()) - 3600  # delivered an hour ago, pasted now
    with app.app_context():
        db.session.add(
            Attempt(
                id="att_doctor1",
                job_id=job_id,
                number=1,
                started_at=datetime.fromtimestamp(sent_at, UTC),
                http_status=401,
                outcome="http_error",
            )
        )
        db.session.commit()
    return job_id, sent_at


def sent(app, project_id: int, job_id: str, timestamp: int, secrets=None):
    """Headers and body of attempt 1, built by the code every attempt is built with."""
    with app.app_context():
        project = db.session.get(Project, project_id)
        job = db.session.get(Job, job_id)
        return signing.delivery_request(
            secrets or (project.webhook_secret,),
            job.id,
            "att_doctor1",
            1,
            job.payload,
            timestamp=timestamp,
            bearer_token=project.webhook_bearer_token,
            user_agent="Dispatched/test",
        )


def block(headers: dict[str, str]) -> str:
    return "POST /hook HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())


def test_job_page_diagnoses_a_pasted_delivery(app, client, owner, job_with_attempt):  # noqa: F811
    job_id, sent_at = job_with_attempt
    url = f"/p/{owner}/jobs/{job_id}"
    page = client.get(url).get_data(as_text=True)
    assert "Signature doctor" in page and f"{url}/doctor" in page
    token = page_token(client, url)
    body, headers = sent(app, owner, job_id, sent_at)

    def doctor(headers_text: str, body_text: str, htmx: bool = True):
        return client.post(
            f"{url}/doctor",
            data={"csrf_token": token, "headers": headers_text, "body": body_text},
            headers={"HX-Request": "true"} if htmx else {},
        )

    good = doctor(block(headers), body.decode() + "\r\n")
    html = good.get_data(as_text=True)
    assert good.status_code == 200 and html.lstrip().startswith("<section")  # the partial
    assert "verify with the project&#39;s current secret and bearer token" in html
    assert "Compared with attempt #1" in html and "TIMESTAMP_OK" in html  # judged as of then

    reencoded = json.dumps(json.loads(body), indent=2, sort_keys=True)
    html = doctor(block(headers), reencoded).get_data(as_text=True)
    assert "BODY_CHANGED" in html and "same JSON encoded differently" in html
    assert "first difference at byte 1" in html

    other = webhooks.new_secret()
    forged = sent(app, owner, job_id, sent_at, secrets=(other,))[1]
    html = doctor(block(forged), body.decode()).get_data(as_text=True)
    assert "WRONG_SECRET" in html and "the body is exactly what was sent" in html

    no_bearer = {k: v for k, v in headers.items() if k != "Authorization"}
    assert "BEARER_MISSING" in doctor(block(no_bearer), body.decode()).get_data(as_text=True)

    full = doctor(block(headers), body.decode(), htmx=False)
    assert full.status_code == 200 and "<title>" in full.get_data(as_text=True)
    empty = doctor("", "", htmx=False)
    assert empty.status_code == 400 and "This field is required" in empty.get_data(as_text=True)


def test_doctor_recognises_a_rotation(app, client, owner, job_with_attempt):  # noqa: F811
    job_id, sent_at = job_with_attempt
    body, before_rotation = sent(app, owner, job_id, sent_at)
    with app.app_context():
        webhooks.rotate_secret(db.session.get(Project, owner))
    url = f"/p/{owner}/jobs/{job_id}"
    html = client.post(
        f"{url}/doctor",
        data={"csrf_token": page_token(client, url), "headers": block(before_rotation),
              "body": body.decode()},
        headers={"HX-Request": "true"},
    ).get_data(as_text=True)  # fmt: skip
    assert "WRONG_SECRET" in html and "matches the previous secret" in html


def test_doctor_needs_csrf_and_the_team(app, client, owner, job_with_attempt):  # noqa: F811
    job_id, _ = job_with_attempt
    url = f"/p/{owner}/jobs/{job_id}/doctor"
    assert client.post(url, data={"headers": "a: b", "body": "{}"}).status_code == 400
    token = page_token(client, f"/p/{owner}/jobs/{job_id}")
    missing = client.post(
        f"/p/{owner}/jobs/job_nope/doctor",
        data={"csrf_token": token, "headers": "a: b", "body": "{}"},
    )
    assert missing.status_code == 404
    client.post("/logout", data={"csrf_token": token})
    sign_up(client, email="other@example.com", team="Other")
    token = page_token(client, "/")
    stranger = client.post(url, data={"csrf_token": token, "headers": "a: b", "body": "{}"})
    assert stranger.status_code == 404
