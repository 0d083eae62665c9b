"""Webhook signing: Standard Webhooks (``webhook-id/-timestamp/-signature``) + bearer secret.

The signature is ``v1,<base64 HMAC-SHA256(secret_bytes, "<id>.<timestamp>.<body>")>``; during
a secret rotation's grace period there is one signature per live secret, space-separated, so
receivers holding either secret verify the delivery.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Sequence

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
    secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes, *, bearer: bool
) -> dict[str, str]:
    """Return the signing headers of a delivery; ``secrets[0]`` is the current secret."""
    result = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signature(s, msg_id, timestamp, body) for s in secrets),
    }
    if bearer:
        # Compatibility with existing Dispatched receivers and the official SDK's verifier.
        result["Authorization"] = f"Bearer {secrets[0]}"
    return result


def delivery_request(
    secrets: Sequence[str],
    msg_id: str,
    attempt_id: str,
    attempt_number: int,
    payload: object,
    *,
    bearer: bool,
    timestamp: int,
    user_agent: str,
) -> tuple[bytes, dict[str, str]]:
    """Return the body and headers of one webhook delivery (DESIGN.md §6)."""
    body = json.dumps(
        {
            "jobId": msg_id,
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
        **headers(secrets, msg_id, timestamp, body, bearer=bearer),
    }
    return body, request_headers
