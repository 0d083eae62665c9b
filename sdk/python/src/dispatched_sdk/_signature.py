"""Standard Webhooks primitives shared by ``verify`` and the signature doctor.

The HMAC itself is computed by the ``standardwebhooks`` library, so what this SDK accepts is
what every Standard Webhooks implementation accepts. This module imports nothing else, so the
Dispatched server can use the doctor without the HTTP client's dependencies.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from standardwebhooks.webhooks import Webhook

HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"
SIGNING_HEADERS = (HEADER_ID, HEADER_TIMESTAMP, HEADER_SIGNATURE)
SECRET_PREFIX = "whsec_"
BEARER_PREFIX = "whbt_"
API_KEY_PREFIX = "disp_"
#: Default timestamp tolerance, seconds (Standard Webhooks' 5 minutes).
DEFAULT_TOLERANCE = 300.0
#: The top-level key order of a delivery body (DESIGN.md §6).
DELIVERY_KEYS = ("jobId", "attemptId", "attempt", "attemptNumber", "payload")

HeadersLike = Mapping[str, str] | Iterable[tuple[str, str]]


def lower_headers(headers: HeadersLike) -> dict[str, str]:
    """Return the headers as a plain dict with lower-case names (any mapping or pair list)."""
    items = headers.items() if hasattr(headers, "items") else headers
    return {str(name).lower(): str(value) for name, value in items}


def key_of(secret: str) -> Webhook:
    """Return the library's signer of a ``whsec_<base64>`` secret; ValueError if it is none."""
    if not isinstance(secret, str) or not secret.strip():
        raise ValueError("the signing secret is empty")
    try:
        return Webhook(secret.strip())
    except (binascii.Error, ValueError, RuntimeError) as exc:
        raise ValueError(f"the signing secret is not valid base64 ({exc})") from None
    except Exception as exc:  # the library raises its own EmptyWebhookSecretError
        raise ValueError(f"the signing secret is unusable: {exc}") from None


def sign(signer: Webhook, msg_id: str, timestamp: int, body: bytes) -> bytes | None:
    """Return the raw HMAC of ``<id>.<timestamp>.<body>``, or None if the body is not UTF-8
    (Dispatched always sends UTF-8, so such a body cannot be the one that was signed)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    when = datetime.fromtimestamp(timestamp, tz=timezone.utc)
    signature = signer.sign(msg_id=msg_id, timestamp=when, data=text)
    return base64.b64decode(signature.split(",", 1)[1])


def parse_signatures(header: str) -> tuple[list[bytes], list[str]]:
    """Split a ``webhook-signature`` header into its ``v1`` digests and the entries that are
    not well-formed ``v1,<base64>`` (other versions are skipped, as the spec says)."""
    digests: list[bytes] = []
    malformed: list[str] = []
    for entry in header.split():
        version, _, value = entry.partition(",")
        if not value:
            malformed.append(entry)
            continue
        if version != "v1":
            continue
        try:
            digests.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            malformed.append(entry)
    return digests, malformed


def parse_timestamp(value: str) -> int | None:
    """The ``webhook-timestamp`` as integer Unix seconds, or None if it is not one."""
    value = value.strip()
    if not value.isdigit():
        return None
    return int(value)


def encode_like_dispatched(document: Any) -> bytes:
    """Encode JSON the way Dispatched encodes a delivery body: compact UTF-8, not ASCII-escaped."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def reorder_delivery(document: Any) -> Any:
    """Put a delivery body's top-level keys back in the order Dispatched sends them."""
    if not isinstance(document, dict):
        return document
    ordered = {k: document[k] for k in DELIVERY_KEYS if k in document}
    ordered.update((k, v) for k, v in document.items() if k not in ordered)
    return ordered


def now_seconds(now: float | datetime | None) -> float:
    if now is None:
        return datetime.now(timezone.utc).timestamp()
    if isinstance(now, datetime):
        if now.tzinfo is None:
            now = now.replace(tzinfo=timezone.utc)
        return now.timestamp()
    return float(now)


def mask(credential: str) -> str:
    """A credential shortened for messages: enough to compare with the dashboard, no more."""
    credential = credential.strip()
    head = credential[: credential.find("_") + 5] if "_" in credential[:8] else credential[:4]
    return f"{head}…" if len(credential) > len(head) else "…"
