"""Receiver side: verify that a request really is a Dispatched delivery (DESIGN.md §6).

A delivery carries Standard Webhooks headers (``webhook-id``, ``webhook-timestamp`` and
``webhook-signature``: one ``v1,<base64 HMAC-SHA256>`` per live signing secret, so during a
rotation there are two) and, unless the project switched it off, ``Authorization: Bearer
<bearer token>``. The signature proves who sent the request *and* that the body is intact; the
bearer token only proves who sent it. Verify against the **raw body bytes**: a body that a
framework parsed and encoded again is different bytes and will not verify.
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, TypedDict

from . import _signature as sig
from ._signature import HeadersLike
from .errors import InvalidSignature

#: Environment variables the framework helpers read when no credential is passed.
ENV_SECRET = "DISPATCHED_WEBHOOK_SECRET"
ENV_BEARER_TOKEN = "DISPATCHED_WEBHOOK_BEARER_TOKEN"


class Delivery(TypedDict):
    """The verified body of a delivery (its other keys, e.g. ``attempt``, are dropped)."""

    jobId: str
    attemptId: str
    attemptNumber: int
    payload: Any


def _secrets(secret: str | Sequence[str] | None) -> list[str]:
    if secret is None:
        return []
    if isinstance(secret, str):
        return [secret]
    return [s for s in secret if s]


def _seconds(tolerance: float | timedelta) -> float:
    return tolerance.total_seconds() if isinstance(tolerance, timedelta) else float(tolerance)


def _raw(raw_body: bytes | bytearray | memoryview | str) -> bytes:
    if isinstance(raw_body, (bytes, bytearray, memoryview)):
        return bytes(raw_body)
    if isinstance(raw_body, str):
        return raw_body.encode("utf-8")
    raise TypeError(
        f"raw_body must be the request's raw bytes, got {type(raw_body).__name__}: a parsed "
        "body cannot be verified (Flask: request.get_data(), Django: request.body, "
        "FastAPI/Starlette: await request.body())"
    )


def verify(
    headers: HeadersLike,
    raw_body: bytes | str,
    *,
    secret: str | Sequence[str] | None = None,
    bearer_token: str | None = None,
    tolerance: float | timedelta = sig.DEFAULT_TOLERANCE,
    now: float | datetime | None = None,
) -> Delivery:
    """Verify a delivery and return its parsed body, or raise InvalidSignature.

    Args:
        headers: the request headers (any mapping or list of pairs; names are case-insensitive).
        raw_body: the body exactly as received.
        secret: the project's signing secret (``whsec_…``), or several (e.g. the old and the new
            one while you rotate): a signature made with any of them is accepted.
        bearer_token: the project's bearer token (``whbt_…``): ``Authorization`` must be
            ``Bearer <token>``. Give ``secret``, ``bearer_token`` or both; each given is checked.
        tolerance: how far ``webhook-timestamp`` may be from now (seconds; default 5 min).
        now: the time to check against (default: the clock).
    """
    secrets = _secrets(secret)
    if not secrets and not bearer_token:
        raise TypeError("verify() needs secret= (whsec_…) and/or bearer_token= (whbt_…)")
    body = _raw(raw_body)
    lowered = sig.lower_headers(headers)
    if secrets:
        _check_signature(lowered, body, secrets, _seconds(tolerance), sig.now_seconds(now))
    if bearer_token:
        _check_bearer(lowered, bearer_token)
    return _delivery(body)


def _check_signature(
    headers: dict[str, str], body: bytes, secrets: list[str], tolerance: float, now: float
) -> None:
    missing = [name for name in sig.SIGNING_HEADERS if not headers.get(name, "").strip()]
    if missing:
        raise InvalidSignature("missing_headers", f"missing header(s): {', '.join(missing)}")
    timestamp = sig.parse_timestamp(headers[sig.HEADER_TIMESTAMP])
    if timestamp is None:
        raise InvalidSignature(
            "invalid_timestamp",
            f"{sig.HEADER_TIMESTAMP} is not Unix seconds: {headers[sig.HEADER_TIMESTAMP]!r}",
        )
    skew = now - timestamp
    if skew > tolerance:
        raise InvalidSignature(
            "timestamp_too_old",
            f"{sig.HEADER_TIMESTAMP} is {skew:.0f} s in the past (tolerance {tolerance:.0f} s)",
        )
    if -skew > tolerance:
        raise InvalidSignature(
            "timestamp_too_new",
            f"{sig.HEADER_TIMESTAMP} is {-skew:.0f} s in the future (tolerance {tolerance:.0f} s)",
        )
    digests, _ = sig.parse_signatures(headers[sig.HEADER_SIGNATURE])
    msg_id = headers[sig.HEADER_ID].strip()
    for secret in secrets:
        try:
            signer = sig.key_of(secret)
        except ValueError as exc:
            raise InvalidSignature("invalid_secret", str(exc)) from None
        expected = sig.sign(signer, msg_id, timestamp, body)
        if expected is not None and any(hmac.compare_digest(expected, d) for d in digests):
            return
    raise InvalidSignature(
        "no_matching_signature",
        "no signature matches the secret: a wrong secret, or a body that is not the raw bytes "
        "received (run `dispatched verify` to find out which)",
    )


def _check_bearer(headers: dict[str, str], token: str) -> None:
    authorization = headers.get("authorization", "").strip()
    if not authorization:
        raise InvalidSignature("missing_authorization", "missing Authorization header")
    expected = f"Bearer {token.strip()}"
    if not hmac.compare_digest(authorization.encode(), expected.encode()):
        raise InvalidSignature("bearer_mismatch", "Authorization is not Bearer <bearer token>")


def _delivery(body: bytes) -> Delivery:
    try:
        document = json.loads(body)
    except ValueError:
        raise InvalidSignature("invalid_body", "the body is not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("jobId"), str):
        raise InvalidSignature("invalid_body", "the body is not a Dispatched delivery")
    return Delivery(
        jobId=document["jobId"],
        attemptId=document.get("attemptId") or document.get("attempt"),
        attemptNumber=document.get("attemptNumber"),
        payload=document.get("payload"),
    )


class Verifier:
    """Credentials and tolerance held once, for the framework helpers and long-lived receivers.

    A credential left out is read from ``DISPATCHED_WEBHOOK_SECRET`` /
    ``DISPATCHED_WEBHOOK_BEARER_TOKEN`` when a request is verified.
    """

    def __init__(
        self,
        secret: str | Sequence[str] | None = None,
        bearer_token: str | None = None,
        *,
        tolerance: float | timedelta = sig.DEFAULT_TOLERANCE,
    ) -> None:
        self.secret = secret
        self.bearer_token = bearer_token
        self.tolerance = tolerance

    def credentials(self) -> tuple[str | Sequence[str] | None, str | None]:
        secret, token = self.secret, self.bearer_token
        if not secret and not token:
            secret = os.environ.get(ENV_SECRET) or None
            token = os.environ.get(ENV_BEARER_TOKEN) or None
        if not secret and not token:
            raise RuntimeError(
                f"no webhook credential: pass secret=/bearer_token= or set {ENV_SECRET}"
            )
        return secret, token

    def verify(self, headers: HeadersLike, raw_body: bytes | str) -> Delivery:
        secret, token = self.credentials()
        return verify(
            headers, raw_body, secret=secret, bearer_token=token, tolerance=self.tolerance
        )


def rejection(exc: InvalidSignature) -> dict[str, Any]:
    """The JSON answer of the framework helpers to a request that does not verify (401).

    Dispatched records the first 2 KB of it with the attempt, so the job page shows why.
    """
    return {"error": "INVALID_SIGNATURE", "data": {"reason": exc.reason, "message": exc.message}}
