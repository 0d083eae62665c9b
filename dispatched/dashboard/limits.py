"""Abuse limits of the account forms (Flask-Limiter, counted in Redis; open if Redis is down).

Every login attempt costs an argon2 hash (64 MiB), so guessing is slowed per email (failed
attempts only: once spent, even the right password waits) and per client address; sign-ups
and invite acceptances share one budget per address; password changes one per user.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from flask import Response, current_app, request
from flask_login import current_user

from ..extensions import limiter


def _setting(name: str) -> Callable[[], str]:
    """Read the limit at request time, so the config (and tests) can change it."""
    return lambda: current_app.config[name]


def client_address() -> str:
    """Key: the client's address (``PROXY_HOPS`` makes it the one the proxies saw)."""
    return f"addr:{request.remote_addr or 'unknown'}"


def login_email() -> str:
    """Key: the email being logged in to, hashed (no addresses in Redis)."""
    email = (request.form.get("email") or "").strip().lower()
    return "email:" + hashlib.sha256(email.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def acting_user() -> str:
    """Key: the logged-in user (their address when logged out)."""
    return f"user:{current_user.id}" if current_user.is_authenticated else client_address()


def failed(response: Response) -> bool:
    """Whether a login attempt was refused (wrong password, bad form), not already limited."""
    return 400 <= response.status_code < 500 and response.status_code != 429


login_per_email = limiter.limit(
    _setting("LOGIN_LIMIT_PER_EMAIL"),
    key_func=login_email,
    methods=["POST"],
    deduct_when=failed,
    scope="email",
    error_message="too many failed logins for this email",
)
login_per_address = limiter.limit(
    _setting("LOGIN_LIMIT_PER_ADDRESS"),
    key_func=client_address,
    methods=["POST"],
    scope="address",
    error_message="too many logins from your address",
)
#: Sign-up and invite acceptance both create an account: one budget per address.
account_creation = limiter.shared_limit(
    _setting("SIGNUP_LIMIT_PER_ADDRESS"),
    scope="account-creation",
    key_func=client_address,
    methods=["POST"],
    error_message="too many new accounts from your address",
)
password_change = limiter.limit(
    _setting("PASSWORD_LIMIT_PER_USER"),
    key_func=acting_user,
    methods=["POST"],
    scope="password",
    error_message="too many password changes",
)
