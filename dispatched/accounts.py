"""Dashboard logins as revocable server-side sessions, and password changes.

Each login gets a random token: the session and remember cookies carry it (Flask-Login's id),
the database keeps only its SHA-256. Logging out, changing the password or "log out other
sessions" revokes rows, so a copied cookie stops working at once.
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta

import sqlalchemy as sa
from flask import current_app

from . import clock, teams
from .errors import BadRequest, NotFound
from .extensions import db
from .ids import random_base62
from .keys import hash_token
from .models import User, UserSession

logger = logging.getLogger(__name__)

#: ``last_seen_at`` is written at most this often, so page views rarely write.
LAST_SEEN_GRANULARITY = timedelta(minutes=5)

#: (pattern, name) pairs, first match wins: enough to recognise one's own devices.
_BROWSERS = [
    (r"Edg/", "Edge"),
    (r"OPR/|Opera", "Opera"),
    (r"Firefox/", "Firefox"),
    (r"Chromium/|HeadlessChrome/", "Chromium"),
    (r"Chrome/", "Chrome"),
    (r"Safari/", "Safari"),
    (r"^curl/", "curl"),
    (r"python-requests|python-httpx|Werkzeug", "a script"),
]
_SYSTEMS = [
    (r"iPhone|iPad", "iOS"),
    (r"Android", "Android"),
    (r"Windows", "Windows"),
    (r"Mac OS X|Macintosh", "macOS"),
    (r"CrOS", "ChromeOS"),
    (r"Linux", "Linux"),
]


def describe_user_agent(user_agent: str | None) -> str:
    """Summarize a User-Agent header as "Firefox on Linux" (never stores the raw header)."""
    text = (user_agent or "")[:512]
    browser = next((name for pattern, name in _BROWSERS if re.search(pattern, text)), None)
    system = next((name for pattern, name in _SYSTEMS if re.search(pattern, text)), None)
    if browser and system:
        return f"{browser} on {system}"
    return browser or system or "Unknown device"


def lifetime() -> timedelta:
    """Return how long a login lasts (the remember cookie's duration, 30 days by default)."""
    return current_app.config["REMEMBER_COOKIE_DURATION"]


def _live() -> sa.ColumnElement[bool]:
    """Return the condition of a session that still opens pages."""
    return sa.and_(
        UserSession.revoked_at.is_(None), UserSession.created_at > clock.utcnow() - lifetime()
    )


def start_session(user: User, user_agent: str | None) -> str:
    """Open a login session for ``user`` and commit; return its token (set on ``user`` too)."""
    now = clock.utcnow()
    # Forget this user's logins that ended long ago, so the table does not grow forever.
    cutoff = now - lifetime()
    db.session.execute(
        sa.delete(UserSession).where(
            UserSession.user_id == user.id,
            sa.or_(UserSession.revoked_at < cutoff, UserSession.created_at < cutoff),
        )
    )
    token = random_base62(43)
    row = UserSession(
        user_id=user.id,
        token_hash=hash_token(token),
        user_agent=describe_user_agent(user_agent),
        created_at=now,
        last_seen_at=now,
    )
    db.session.add(row)
    db.session.commit()
    user.session_token = token
    return token


def user_for_token(token: str) -> tuple[User, UserSession] | None:
    """Return the user and session of a live session token, or None (unknown, revoked, expired).

    Refreshes the session's ``last_seen_at`` when it is older than LAST_SEEN_GRANULARITY.
    """
    if not token or len(token) > 200:
        return None
    found = db.session.execute(
        sa.select(User, UserSession)
        .join(UserSession, UserSession.user_id == User.id)
        .where(UserSession.token_hash == hash_token(token), _live())
    ).first()
    if found is None:
        return None
    user, row = found
    now = clock.utcnow()
    if row.last_seen_at < now - LAST_SEEN_GRANULARITY:
        db.session.execute(
            sa.update(UserSession)
            .where(UserSession.id == row.id, UserSession.last_seen_at < now - LAST_SEEN_GRANULARITY)
            .values(last_seen_at=now)
        )
        db.session.commit()
        row.last_seen_at = now
    user.session_token = token
    return user, row


def end_session(token: str | None) -> None:
    """Revoke the session of ``token`` (logging out) and commit."""
    if not token:
        return
    db.session.execute(
        sa.update(UserSession)
        .where(UserSession.token_hash == hash_token(token), UserSession.revoked_at.is_(None))
        .values(revoked_at=clock.utcnow())
    )
    db.session.commit()


def sessions_of(user: User) -> list[UserSession]:
    """Return the user's live sessions, most recently seen first."""
    return list(
        db.session.execute(
            sa.select(UserSession)
            .where(UserSession.user_id == user.id, _live())
            .order_by(UserSession.last_seen_at.desc(), UserSession.id.desc())
        ).scalars()
    )


def current_session_id(user: User) -> int | None:
    """Return the id of the session ``user`` was loaded with, or None."""
    token = user.get_session_token()
    if not token:
        return None
    return db.session.execute(
        sa.select(UserSession.id).where(UserSession.token_hash == hash_token(token))
    ).scalar_one_or_none()


def _revoke_others(user: User) -> int:
    """Revoke the user's live sessions except the one ``user`` was loaded with; flush only."""
    keep = hash_token(user.get_session_token() or "")
    result = db.session.execute(
        sa.update(UserSession)
        .where(
            UserSession.user_id == user.id,
            UserSession.revoked_at.is_(None),
            UserSession.token_hash != keep,
        )
        .values(revoked_at=clock.utcnow())
    )
    return result.rowcount or 0


def revoke_other_sessions(user: User) -> int:
    """Log the user out everywhere but here and commit; return how many sessions ended."""
    count = _revoke_others(user)
    db.session.commit()
    return count


def revoke_session(user: User, session_id: int) -> None:
    """Revoke one of the user's own sessions and commit; another user's is a NotFound."""
    result = db.session.execute(
        sa.update(UserSession)
        .where(
            UserSession.id == session_id,
            UserSession.user_id == user.id,
            UserSession.revoked_at.is_(None),
        )
        .values(revoked_at=clock.utcnow())
    )
    if not result.rowcount:
        db.session.rollback()
        raise NotFound(f"Session {session_id} not found")
    db.session.commit()


def change_password(user: User, current: str, new: str) -> int:
    """Set a new password (the current one is required), end the user's other sessions, commit.

    Returns how many other sessions were logged out.

    Raises:
        BadRequest: the current password is wrong, or the new one is not 12-200 characters.
    """
    if not teams.check_password(user, current or ""):
        raise BadRequest("the current password is wrong")
    teams.check_new_password(new)
    user.password_hash = teams.hash_password(new)
    count = _revoke_others(user)
    db.session.commit()
    logger.info("user %s changed their password; %d other sessions logged out", user.id, count)
    return count
