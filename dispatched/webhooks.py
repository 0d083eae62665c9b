"""Webhook URLs and secrets: the rules for saving them (DESIGN.md §6)."""

from __future__ import annotations

import base64
import secrets
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import requests
from flask import current_app
from requests_hardened.ip_filter import InvalidIPAddress, filter_host

from .errors import BadRequest
from .models import Project

SECRET_PREFIX = "whsec_"
MAX_URL_LENGTH = 2048
#: After a rotation the previous secret keeps signing (and verifying) for this long.
ROTATION_GRACE = timedelta(hours=24)


def new_secret() -> str:
    """Return a Standard Webhooks secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def live_secrets(project: Project, now: datetime) -> tuple[str, ...]:
    """The secrets a delivery is signed with: the current one, plus the previous one during
    the rotation grace period."""
    previous = project.previous_webhook_secret
    rotated = project.secret_rotated_at
    if previous and rotated and now - rotated < ROTATION_GRACE:
        return (project.webhook_secret, previous)
    return (project.webhook_secret,)


def validate_url(url: object, *, allow_private: bool | None = None) -> str:
    """Return a cleaned webhook URL, or raise BadRequest saying what is wrong with it.

    Unless private webhooks are allowed, the host must resolve to a public address: loopback,
    private, link-local (cloud metadata), CGNAT and similar ranges are refused, using the same
    filter (requests-hardened) that guards delivery.
    """
    if allow_private is None:
        allow_private = current_app.config["ALLOW_PRIVATE_WEBHOOKS"]
    if not isinstance(url, str) or not url.strip():
        raise BadRequest(f"webhook URL must be a non-empty string, got {url!r}")
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise BadRequest(f"webhook URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise BadRequest(f"webhook URL {url!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest(f"webhook URL must be an http(s) URL with a host, got {url!r}")
    if parts.username or parts.password:
        raise BadRequest("webhook URL must not contain credentials; use the webhook secret")
    if not allow_private:
        try:
            filter_host(parts.hostname, port, allow_loopback=False)
        except InvalidIPAddress:
            raise BadRequest(
                f"webhook URL {url!r} resolves to a private, loopback or link-local address;"
                " set ALLOW_PRIVATE_WEBHOOKS=1 to allow it"
            ) from None
        except (requests.RequestException, UnicodeError, ValueError) as exc:
            raise BadRequest(
                f"webhook URL host {parts.hostname!r} does not resolve: {exc}"
            ) from None
    return url
