"""Webhook URLs, signing secrets and bearer tokens: the rules for saving them (DESIGN.md §6).

A project has two credentials. The Standard Webhooks **signing secret** (``whsec_…``) signs
every delivery and is never sent; rotating it keeps the previous one signing for 24 h, so
receivers can switch without dropping a delivery. The **bearer token** (``whbt_…``) is sent as
``Authorization: Bearer`` for receivers using the official SDK's verifier; it proves nothing
about the body, and rotating it takes effect at once, with no overlap: a header carries one
token (an overlap could only delay the new one), and a bearer token is rotated because it was
seen, so the old one must stop working now. Receivers that need a rotation without a gap verify
the signature instead.
"""

from __future__ import annotations

import base64
import secrets
from datetime import datetime, timedelta
from typing import Protocol
from urllib.parse import urlsplit

from flask import current_app

from . import clock, endpoint_health, outbound, signing
from .errors import BadRequest
from .extensions import db
from .models import Project
from .outbound import USER_AGENT

MAX_URL_LENGTH = 2048
#: After a rotation the previous secret keeps signing (and verifying) for this long.
ROTATION_GRACE = timedelta(hours=24)


#: Prefix of bearer tokens: visibly not a signing secret (``whsec_``) nor an API key.
BEARER_PREFIX = "whbt_"


def new_secret() -> str:
    """Return a Standard Webhooks secret: ``whsec_`` + base64 of 32 random bytes."""
    return signing.SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def new_bearer_token() -> str:
    """Return a bearer token: ``whbt_`` + 32 random bytes, url-safe base64 (no spaces)."""
    return BEARER_PREFIX + secrets.token_urlsafe(32)


class SecretHolder(Protocol):
    """A project, or a row with its secret columns."""

    webhook_secret: str
    previous_webhook_secret: str | None
    secret_rotated_at: datetime | None


def live_secrets(project: SecretHolder, now: datetime) -> tuple[str, ...]:
    """The secrets a delivery is signed with: the current one, plus the previous one during
    the rotation grace period."""
    previous = project.previous_webhook_secret
    rotated = project.secret_rotated_at
    if previous and rotated and now - rotated < ROTATION_GRACE:
        return (project.webhook_secret, previous)
    return (project.webhook_secret,)


def validate_url(
    url: object,
    *,
    allow_private: bool | None = None,
    allow_http: bool | None = None,
    name: str = "webhook URL",
    field: str | None = None,
) -> str:
    """Return a cleaned webhook URL, or raise BadRequest saying what is wrong with it.

    Unless private webhooks are allowed, the host must resolve to a public address: loopback,
    private, link-local (cloud metadata), CGNAT and similar ranges are refused, using the same
    filter (``outbound.forbidden``) that guards delivery. Unless ``http://`` webhooks are allowed
    (production's default: not), the URL must be ``https://``. Both default to the app config.
    Callback URLs follow the same rules: ``name`` is what messages call the URL and ``field``
    the request field the error names (``data.field``).
    """
    if allow_private is None:
        allow_private = current_app.config["ALLOW_PRIVATE_WEBHOOKS"]
    if allow_http is None:
        allow_http = current_app.config["ALLOW_HTTP_WEBHOOKS"]
    extra = {"field": field} if field else {}
    if not isinstance(url, str) or not url.strip():
        raise BadRequest(f"{name} must be a non-empty string, got {url!r}", **extra)
    if len(url) > MAX_URL_LENGTH:
        raise BadRequest(f"{name} is longer than {MAX_URL_LENGTH} characters", **extra)
    url = url.strip()
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        raise BadRequest(f"{name} {url[:100]!r} contains spaces or control characters", **extra)
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise BadRequest(f"{name} {url!r} is not a valid URL: {exc}", **extra) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest(f"{name} must be an http(s) URL with a host, got {url!r}", **extra)
    if parts.username or parts.password:
        raise BadRequest(f"{name} must not contain credentials; use the webhook secret", **extra)
    if parts.scheme == "http" and not allow_http:
        raise BadRequest(
            f"{name} {url!r} is not https://: deliveries would cross the network "
            "unencrypted; use https:// or set ALLOW_HTTP_WEBHOOKS=1 to allow it",
            **extra,
        )
    if not allow_private:
        try:
            outbound.check_host(parts.hostname, port)
        except outbound.PrivateAddress:
            raise BadRequest(
                f"{name} {url!r} resolves to a private, loopback or link-local address;"
                " set ALLOW_PRIVATE_WEBHOOKS=1 to allow it",
                **extra,
            ) from None
        except (OSError, UnicodeError, ValueError) as exc:
            raise BadRequest(
                f"{name} host {parts.hostname!r} does not resolve: {exc}", **extra
            ) from None
    return url


def set_url(project: Project, url: str | None) -> None:
    """Save the project's webhook URL (validated; empty clears it) and commit.

    A new URL starts the endpoint's failure count afresh; a paused endpoint stays paused until
    it is resumed (DESIGN.md §12).
    """
    new_url = validate_url(url) if url and url.strip() else None
    if new_url != project.webhook_url:
        endpoint_health.reset_failures(project.id)  # endpoint health (DESIGN.md §12)
    project.webhook_url = new_url
    db.session.commit()


def set_bearer(project: Project, enabled: bool) -> None:
    """Switch the ``Authorization: Bearer <token>`` header of deliveries on or off; commit."""
    project.send_bearer = enabled
    db.session.commit()


def rotate_bearer_token(project: Project) -> str:
    """Replace the bearer token at once (no overlap, see the module); commit; return the new."""
    project.webhook_bearer_token = new_bearer_token()
    db.session.commit()
    return project.webhook_bearer_token


def rotate_secret(project: Project, now: datetime | None = None) -> str:
    """Replace the secret; the previous one keeps signing for ROTATION_GRACE. Returns the new."""
    project.previous_webhook_secret = project.webhook_secret
    project.webhook_secret = new_secret()
    project.secret_rotated_at = now or clock.utcnow()
    db.session.commit()
    return project.webhook_secret


#: The payload of a dashboard test event.
TEST_PAYLOAD = {"type": "dispatched.test", "message": "Test event from the dashboard"}


def test_event_request(project: Project, event_id: str) -> tuple[bytes, dict[str, str]]:
    """Return the body and headers of a test event, signed exactly like a delivery (its id
    stands for the job and attempt ids). ``test_events`` has a worker send it."""
    now = clock.utcnow()
    return signing.delivery_request(
        live_secrets(project, now),
        event_id,
        event_id,
        1,
        TEST_PAYLOAD,
        timestamp=int(now.timestamp()),
        bearer_token=project.webhook_bearer_token if project.send_bearer else None,
        user_agent=USER_AGENT,
    )
