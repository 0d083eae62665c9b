"""Webhook signing: Standard Webhooks (``webhook-id/-timestamp/-signature``) + a bearer token.

The signature is ``v1,<base64 HMAC-SHA256(secret_bytes, "<id>.<timestamp>.<body>")>``; during
a secret rotation's grace period there is one signature per live secret, space-separated, so
receivers holding either secret verify the delivery. The signing secret itself is never sent:
``Authorization: Bearer`` carries the project's separate bearer token, so a leaked header lets
nobody sign. ``delivery_request`` builds the one body and header set every attempt (and the
dashboard's test event) is sent with.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Sequence
from typing import Any

SECRET_PREFIX = "whsec_"


def secret_key(secret: str) -> bytes:
    """Return the HMAC key of a ``whsec_<base64>`` secret."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Return one ``v1,<base64>`` signature of ``body``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def headers(
    secrets: Sequence[str],
    msg_id: str,
    timestamp: int,
    body: bytes,
    *,
    bearer_token: str | None,
) -> dict[str, str]:
    """Return the signing headers of a delivery; ``secrets[0]`` is the current secret.

    ``bearer_token`` (None: no header) is sent as ``Authorization: Bearer <token>``.
    """
    result = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signature(s, msg_id, timestamp, body) for s in secrets),
    }
    if bearer_token is not None:
        # Compatibility with existing Dispatched receivers and the official SDK's verifier.
        result["Authorization"] = f"Bearer {bearer_token}"
    return result


def delivery_request(
    secrets: Sequence[str],
    job_id: str,
    attempt_id: str,
    attempt_number: int,
    payload: Any,
    *,
    timestamp: int,
    bearer_token: str | None,
    user_agent: str,
) -> tuple[bytes, dict[str, str]]:
    """Return the body and headers of one delivery attempt (DESIGN.md §6), signed.

    The body is compact UTF-8 JSON; ``attempt`` repeats ``attemptId`` under its older name. The
    job id is the ``webhook-id``, the same on every attempt, so receivers dedupe on it.
    """
    body = json.dumps(
        {
            "jobId": job_id,
            "attemptId": attempt_id,
            "attempt": attempt_id,
            "attemptNumber": attempt_number,
            "payload": payload,
        },
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode("utf-8")
    request_headers = {
        "Content-Type": "application/json",
        "User-Agent": user_agent,
        **headers(secrets, job_id, timestamp, body, bearer_token=bearer_token),
    }
    return body, request_headers


def event_request(
    secrets: Sequence[str],
    msg_id: str,
    body: bytes,
    *,
    timestamp: int,
    bearer_token: str | None,
    user_agent: str,
) -> dict[str, str]:
    """Return the headers of an event that is not a delivery (a callback, DESIGN.md §11): the
    same headers as a delivery, signed over ``body`` with ``msg_id`` as the ``webhook-id``."""
    return {
        "Content-Type": "application/json",
        "User-Agent": user_agent,
        **headers(secrets, msg_id, timestamp, body, bearer_token=bearer_token),
    }
