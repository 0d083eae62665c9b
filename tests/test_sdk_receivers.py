"""The SDK's receiver side: ``verify``, the Flask / Django / FastAPI helpers (each through the
framework's own test client), the signature doctor and ``dispatched verify``.

Deliveries are built by the server's own signer (``dispatched.signing.delivery_request``), the
code every real attempt goes through; tests/test_sdk_e2e.py has real workers send them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import warnings
from typing import Any

import pytest
from dispatched_sdk import InvalidSignature, diagnose, verify
from dispatched_sdk.doctor import parse_header_block
from django.test import Client as DjangoClient
from standardwebhooks.webhooks import Webhook
from starlette.exceptions import StarletteDeprecationWarning

from dispatched import signing, webhooks
from tests import sdk_apps

with warnings.catch_warnings():
    # Starlette 1.x asks for its `httpx2` fork under the test client; httpx (the SDK's) works.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

SECRET = webhooks.new_secret()
OLD_SECRET = webhooks.new_secret()
OTHER_SECRET = webhooks.new_secret()
TOKEN = webhooks.new_bearer_token()
PAYLOAD = {"order": 42, "note": "déjà vu", "items": [1, 2]}


def delivery(
    secrets: tuple[str, ...] = (SECRET,),
    *,
    timestamp: int | None = None,
    bearer: str | None = TOKEN,
    payload: Any = PAYLOAD,
) -> tuple[dict[str, str], bytes]:
    """Headers and body of one attempt, exactly as the delivery engine builds them."""
    body, headers = signing.delivery_request(
        secrets,
        "job_abc123",
        "att_xyz789",
        2,
        payload,
        timestamp=int(time.time()) if timestamp is None else timestamp,
        bearer_token=bearer,
        user_agent="Dispatched/test",
    )
    return headers, body


def reason(**kwargs: Any) -> str:
    headers, body = kwargs.pop("delivery", delivery())
    with pytest.raises(InvalidSignature) as exc:
        verify(headers, body, **kwargs)
    return exc.value.reason


# --- verify() ----------------------------------------------------------------------------------


def test_verify_returns_the_delivery():
    headers, body = delivery()
    assert verify(headers, body, secret=SECRET) == {
        "jobId": "job_abc123",
        "attemptId": "att_xyz789",
        "attemptNumber": 2,
        "payload": PAYLOAD,
    }
    lowered = {k.upper(): v for k, v in headers.items()}  # header names are case-insensitive
    assert verify(list(lowered.items()), body.decode(), secret=SECRET)["jobId"] == "job_abc123"
    # What verify accepts, the standardwebhooks library accepts too.
    assert Webhook(SECRET).verify(body, headers)["jobId"] == "job_abc123"


def test_verify_during_a_rotation_accepts_either_secret():
    headers, body = delivery((SECRET, OLD_SECRET))  # the grace period: two signatures
    assert len(headers["webhook-signature"].split()) == 2
    assert verify(headers, body, secret=SECRET)["attemptNumber"] == 2
    assert verify(headers, body, secret=OLD_SECRET)["attemptNumber"] == 2
    assert reason(delivery=(headers, body), secret=OTHER_SECRET) == "no_matching_signature"
    # A receiver switching secrets may hold both.
    after_grace = delivery((SECRET,))
    assert verify(*after_grace, secret=[OLD_SECRET, SECRET])["jobId"] == "job_abc123"


def test_verify_refuses_a_changed_body_missing_headers_and_a_bad_timestamp():
    headers, body = delivery()
    reencoded = json.dumps(json.loads(body))
    assert reason(delivery=(headers, reencoded), secret=SECRET) == "no_matching_signature"
    with pytest.raises(TypeError, match="raw bytes"):
        verify(headers, json.loads(body), secret=SECRET)  # type: ignore[arg-type]
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        partial = {k: v for k, v in headers.items() if k != name}
        assert reason(delivery=(partial, body), secret=SECRET) == "missing_headers"
    bad = {**headers, "webhook-timestamp": "soon"}
    assert reason(delivery=(bad, body), secret=SECRET) == "invalid_timestamp"
    old = delivery(timestamp=int(time.time()) - 400)
    assert reason(delivery=old, secret=SECRET) == "timestamp_too_old"
    assert verify(*old, secret=SECRET, tolerance=600)["jobId"] == "job_abc123"
    assert reason(delivery=delivery(timestamp=int(time.time()) + 400), secret=SECRET) == (
        "timestamp_too_new"
    )
    with pytest.raises(TypeError, match="secret="):
        verify(headers, body)


def test_verify_checks_the_bearer_token_when_given():
    headers, body = delivery()
    assert verify(headers, body, bearer_token=TOKEN)["jobId"] == "job_abc123"
    assert verify(headers, body, secret=SECRET, bearer_token=TOKEN)["jobId"] == "job_abc123"
    assert reason(bearer_token="whbt_other") == "bearer_mismatch"
    assert reason(secret=SECRET, bearer_token="whbt_other") == "bearer_mismatch"  # both checked
    assert reason(delivery=delivery(bearer=None), bearer_token=TOKEN) == "missing_authorization"


# --- the framework helpers, through each framework's test client ------------------------------


def test_flask_decorator():
    received: list = []
    client = sdk_apps.flask_app(received, secret=SECRET).test_client()
    headers, body = delivery()
    r = client.post("/hook", data=body, headers=headers)
    assert r.status_code == 200 and r.json == {"ok": True, "jobId": "job_abc123"}
    assert received == [verify(headers, body, secret=SECRET)]
    r = client.post("/hook", data=body, headers={**headers, "webhook-signature": "v1,AAAA"})
    assert r.status_code == 401 and r.json["error"] == "INVALID_SIGNATURE"
    assert r.json["data"]["reason"] == "no_matching_signature"
    # The bug the helpers exist for: the parsed body, encoded again, does not verify.
    r = client.post("/parsed", data=body, headers=headers)
    assert r.status_code == 401 and r.json["error"] == "no_matching_signature"
    assert len(received) == 1


def test_flask_decorator_reads_credentials_from_the_environment(monkeypatch):
    received: list = []
    client = sdk_apps.flask_app(received).test_client()
    headers, body = delivery()
    monkeypatch.setenv("DISPATCHED_WEBHOOK_BEARER_TOKEN", TOKEN)
    assert client.post("/hook", data=body, headers=headers).status_code == 200
    monkeypatch.setenv("DISPATCHED_WEBHOOK_BEARER_TOKEN", "whbt_rotated")
    r = client.post("/hook", data=body, headers=headers)
    assert r.status_code == 401 and r.json["data"]["reason"] == "bearer_mismatch"


def test_django_decorator_is_csrf_exempt():
    received: list = []
    sdk_apps.django_app(received, secret=SECRET, bearer_token=TOKEN)
    client = DjangoClient(enforce_csrf_checks=True)
    headers, body = delivery()
    http_headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
    r = client.post("/hook", data=body, content_type="application/json", headers=http_headers)
    assert r.status_code == 200, r.content
    assert r.json() == {"ok": True, "jobId": "job_abc123"} and received[0]["payload"] == PAYLOAD
    r = client.post(
        "/hook",
        data=json.dumps(json.loads(body)),
        content_type="application/json",
        headers=http_headers,
    )
    assert r.status_code == 401 and r.json()["data"]["reason"] == "no_matching_signature"
    assert client.get("/hook").status_code == 405
    assert len(received) == 1


def test_fastapi_dependency():
    received: list = []
    client = TestClient(sdk_apps.fastapi_app(received, secret=[OLD_SECRET, SECRET]))
    headers, body = delivery()
    r = client.post("/hook", content=body, headers=headers)
    assert r.status_code == 200 and r.json() == {"ok": True, "jobId": "job_abc123"}
    assert received[0]["attemptId"] == "att_xyz789"
    stale = delivery(timestamp=int(time.time()) - 3600)
    r = client.post("/hook", content=stale[1], headers=stale[0])
    assert r.status_code == 401
    assert r.json()["detail"]["data"]["reason"] == "timestamp_too_old"
    assert len(received) == 1


# --- the signature doctor ----------------------------------------------------------------------


def findings(diagnosis) -> dict[str, str]:
    return {f.code: f.message for f in diagnosis.findings}


def test_doctor_on_a_good_delivery():
    headers, body = delivery((SECRET, OLD_SECRET))
    result = diagnose(headers, body, secret=SECRET, bearer_token=TOKEN)
    assert result.verified and not result.problems
    assert set(result.codes) == {"TIMESTAMP_OK", "SIGNATURE_OK", "BEARER_OK"}
    assert "signature #1 of 2" in findings(result)["SIGNATURE_OK"]
    assert result.text().startswith("Delivery VERIFIES")


def test_doctor_missing_header():
    headers, body = delivery()
    del headers["webhook-signature"]
    result = diagnose(headers, body, secret=SECRET)
    assert not result.verified and result.codes == ["MISSING_HEADER"]
    assert "missing webhook-signature" in findings(result)["MISSING_HEADER"]


def test_doctor_timestamp_skew_says_by_how_much():
    headers, body = delivery()
    now = int(headers["webhook-timestamp"]) + 412
    result = diagnose(headers, body, secret=SECRET, now=now)
    message = findings(result)["TIMESTAMP_SKEW"]
    assert "412 s in the past" in message and "112 s beyond the tolerance of 300 s" in message
    assert "SIGNATURE_OK" in result.codes  # the signature itself is fine
    ahead = diagnose(headers, body, secret=SECRET, now=now - 412 - 301)
    assert "301 s in the future" in findings(ahead)["TIMESTAMP_SKEW"]


def test_doctor_wrong_secret_and_rotation():
    headers, body = delivery((SECRET,))  # after the grace period: the new secret only
    result = diagnose(headers, body, secret=OLD_SECRET)
    assert not result.verified and "WRONG_SECRET" in result.codes
    assert "most likely wrong" in findings(result)["WRONG_SECRET"]  # the body is untouched
    rotation = diagnose(headers, body, secret=OLD_SECRET, previous_secret=SECRET)
    message = findings(rotation)["WRONG_SECRET"]
    assert "matches the previous secret" in message and "rotation" in message
    assert not rotation.verified


def test_doctor_body_reencoded_by_the_framework():
    headers, body = delivery()
    reencoded = json.dumps(json.loads(body)).encode()  # ", " / ": " and \\u escapes
    result = diagnose(headers, reencoded, secret=SECRET)
    message = findings(result)["BODY_CHANGED"]
    assert "first difference at byte 9" in message  # after b'{"jobId":'
    assert "same JSON encoded differently" in message and "request.get_data()" in message
    assert "WRONG_SECRET" not in result.codes and not result.verified
    # Keys sorted by the framework: only the bytes that were sent explain it.
    sorted_body = json.dumps(json.loads(body), sort_keys=True).encode()
    assert "NO_MATCHING_SIGNATURE" in diagnose(headers, sorted_body, secret=SECRET).codes
    known = diagnose(headers, sorted_body, secret=SECRET, sent_body=body)
    assert "same JSON encoded differently" in findings(known)["BODY_CHANGED"]


def test_doctor_body_altered():
    headers, body = delivery()
    altered = body.replace(b'"order":42', b'"order":43')
    result = diagnose(headers, altered, secret=SECRET, sent_body=body)
    message = findings(result)["BODY_CHANGED"]
    assert f"first difference at byte {body.index(b'42') + 1}" in message
    assert "not the same JSON" in message
    truncated = diagnose(headers, body[:-5], secret=SECRET)
    assert "first difference" in findings(truncated).get("BODY_CHANGED", "") or (
        "NO_MATCHING_SIGNATURE" in truncated.codes
    )


def test_doctor_bearer_problems_and_credential_mixups():
    headers, body = delivery()
    assert "BEARER_MISMATCH" in diagnose(headers, body, bearer_token="whbt_old").codes
    no_auth = {k: v for k, v in headers.items() if k != "Authorization"}
    assert "BEARER_MISSING" in diagnose(no_auth, body, bearer_token=TOKEN).codes
    mixup = diagnose(headers, body, secret=TOKEN)
    assert (
        "is a bearer token (whbt_…), not the signing secret" in findings(mixup)["CREDENTIAL_MIXUP"]
    )
    assert "CREDENTIAL_MIXUP" in diagnose(headers, body, bearer_token=SECRET).codes


def test_doctor_headers_and_body_of_different_requests():
    headers, _ = delivery()
    other = signing.delivery_request(
        (SECRET,), "job_other", "att_1", 1, {}, timestamp=1, bearer_token=None, user_agent="x"
    )[0]
    assert "ID_MISMATCH" in diagnose(headers, other, secret=SECRET).codes


def test_header_block_parsing():
    block = (
        "POST /hook HTTP/1.1\r\n"
        "Host: example.test\r\n"
        "Webhook-Id: job_1\r\n"
        "webhook-timestamp:  1700000000 \r\n"
        "Authorization: Bearer whbt_x:y\r\n"
        "\r\n"
    )
    assert parse_header_block(block) == {
        "host": "example.test",
        "webhook-id": "job_1",
        "webhook-timestamp": "1700000000",
        "authorization": "Bearer whbt_x:y",
    }
    curl = "curl -X POST \\\n  -H 'webhook-id: job_2' \\\n  -H \"Webhook-Signature: v1,abc\" \\"
    assert parse_header_block(curl) == {"webhook-id": "job_2", "webhook-signature": "v1,abc"}
    assert parse_header_block('{"Webhook-Id": "job_3"}') == {"webhook-id": "job_3"}


# --- dispatched verify --------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dispatched_sdk", *args], capture_output=True, text=True, timeout=60
    )


def test_cli_verify(tmp_path):
    headers, body = delivery((SECRET, OLD_SECRET))
    (tmp_path / "headers.txt").write_text("".join(f"{k}: {v}\n" for k, v in headers.items()))
    (tmp_path / "body.json").write_bytes(body)
    (tmp_path / "parsed.json").write_text(json.dumps(json.loads(body), indent=2))
    files = ["--headers", str(tmp_path / "headers.txt"), "--body"]

    ok = run_cli(
        "verify",
        "--secret",
        OLD_SECRET,
        "--bearer-token",
        TOKEN,
        *files,
        str(tmp_path / "body.json"),
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("Delivery VERIFIES") and "BEARER_OK" in ok.stdout

    bad = run_cli("verify", "--secret", SECRET, *files, str(tmp_path / "parsed.json"))
    assert bad.returncode == 1 and "BODY_CHANGED" in bad.stdout
    assert "same JSON encoded differently" in bad.stdout

    as_json = run_cli(
        "verify", "--json", "--secret", OTHER_SECRET, *files, str(tmp_path / "body.json")
    )
    report = json.loads(as_json.stdout)
    assert as_json.returncode == 1 and report["verified"] is False
    assert "WRONG_SECRET" in [f["code"] for f in report["findings"]]

    late = run_cli(
        "verify",
        "--secret",
        SECRET,
        "--now",
        str(int(headers["webhook-timestamp"]) + 900),
        *files,
        str(tmp_path / "body.json"),
    )
    assert late.returncode == 1 and "900 s in the past" in late.stdout

    usage = run_cli("verify", *files, str(tmp_path / "body.json"))
    assert usage.returncode == 2 and "--secret" in usage.stderr
    missing = run_cli("verify", "--secret", SECRET, *files, str(tmp_path / "nope.json"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr
