"""API keys: tokens are shown once; only their SHA-256 is stored (DESIGN.md §3).

A key has a **scope** (DESIGN.md §5): ``jobs`` (the default: jobs, batch, usage, reading the
project) or ``admin`` (also the project's settings and resuming its endpoint).

**The lookup cache.** Every API request authenticates, so each process keeps the principals of
the keys it saw (``CACHE_TTL``), and a request with a cached key reads no database row. The
cache stays correct across nodes through one Redis value, the *epoch*: an entry is used only
while the epoch is the one it was read under, and everything that can make an entry wrong (a key
revoked, a team's plan changed) sets a new random epoch after its commit. So a revoked key is
refused on its very next request on every node. When Redis cannot be read, the cache is not
used (and is emptied): the database answers. A random value rather than a counter, so a Redis
that lost its data can never bring an old epoch back. The ``last_used_at`` column is refreshed
when a process looks a key up in the database, at most once per ``LAST_USED_GRANULARITY``.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from flask import current_app
from redis.exceptions import RedisError

from . import clock, plans, redis_client
from .errors import BadRequest
from .extensions import autocommit, db
from .ids import random_base62
from .models import ApiKey, Project

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "disp_k1_"
#: last_used_at is refreshed at most this often, so the hot path rarely writes.
LAST_USED_GRANULARITY = timedelta(seconds=60)
#: Key scopes, least privilege first; ``admin`` can do everything ``jobs`` can.
JOBS = "jobs"
ADMIN = "admin"
SCOPES = (JOBS, ADMIN)
#: What a scope allows, for the dashboard and the docs.
SCOPE_DESCRIPTIONS = {
    JOBS: "jobs, batch dispatch, usage, reading the project",
    ADMIN: "everything jobs can, plus the project's settings and resuming its endpoint",
}

#: The Redis value every cached principal is checked against (see the module docstring).
EPOCH_KEY = "dispatched:keys:epoch"
#: How long a process trusts a cached principal without the database (the epoch still gates it).
CACHE_TTL = 60.0
#: Most keys one process caches; beyond that the cache starts over.
CACHE_MAX = 10_000
_CACHE = "dispatched.keys.cache"


@dataclass(frozen=True)
class Principal:
    """Who a valid API key speaks for."""

    key_id: int
    project_id: int
    team_id: int
    plan: str
    scope: str = JOBS

    def allows(self, scope: str) -> bool:
        """Whether the key may use a route that needs ``scope``."""
        return self.scope == ADMIN or scope == JOBS


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def check_scope(scope: str | None) -> str:
    """Return a valid scope (None = the default, ``jobs``), or raise BadRequest."""
    if scope is None:
        return JOBS
    if scope not in SCOPES:
        raise BadRequest(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    return scope


def create_key(project: Project, label: str = "default", scope: str = JOBS) -> tuple[ApiKey, str]:
    """Create a key for ``project``, flush only; return it and the token (shown once)."""
    token = TOKEN_PREFIX + random_base62(32)
    key = ApiKey(
        project_id=project.id,
        label=label.strip()[:120] or "default",
        prefix=token[: len(TOKEN_PREFIX) + 4],
        token_hash=hash_token(token),
        scope=check_scope(scope),
    )
    db.session.add(key)
    db.session.flush()
    return key, token


def issue_key(project: Project, label: str, scope: str = JOBS) -> tuple[ApiKey, str]:
    """Create a key for ``project`` and commit; return it and the token (shown once)."""
    key, token = create_key(project, label, scope)
    db.session.commit()
    return key, token


def replace_labelled(project: Project, label: str) -> str:
    """Revoke the project's live keys labelled ``label``, create a new one, commit; return it."""
    db.session.execute(
        sa.update(ApiKey)
        .where(
            ApiKey.project_id == project.id,
            ApiKey.label == label,
            ApiKey.revoked_at.is_(None),
        )
        .values(revoked_at=clock.utcnow())
    )
    _, token = create_key(project, label)
    db.session.commit()
    invalidate_cache()
    return token


def authenticate(token: str) -> Principal | None:
    """Return the principal of a live key, or None for a missing/unknown/revoked one."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    token_hash = hash_token(token)
    cache: dict[str, tuple[Principal, bytes, float]] = current_app.extensions.setdefault(_CACHE, {})
    epoch = _epoch()
    if epoch is None:
        cache.clear()
    else:
        entry = cache.get(token_hash)
        if entry is not None and entry[1] == epoch and entry[2] > time.monotonic():
            return entry[0]
    # The epoch was read before the database: an entry stored under it can only be older than
    # a revocation whose new epoch this process has not seen yet, and that one it will see.
    principal = _lookup(token_hash)
    if principal is not None and epoch is not None:
        if len(cache) >= CACHE_MAX:
            cache.clear()
        cache[token_hash] = (principal, epoch, time.monotonic() + CACHE_TTL)
    return principal


def _lookup(token_hash: str) -> Principal | None:
    """Read a live key from the database (one autocommit statement; a coarse last-use write)."""
    query = (
        plans.select_with_plan(
            ApiKey.id, ApiKey.project_id, ApiKey.scope, ApiKey.last_used_at, Project.team_id
        )
        .join(ApiKey, ApiKey.project_id == Project.id)
        .where(ApiKey.token_hash == token_hash, ApiKey.revoked_at.is_(None))
    )
    with autocommit() as conn:
        row = conn.execute(query).first()
        if row is None:
            return None
        now = clock.utcnow()
        if row.last_used_at is None or now - row.last_used_at > LAST_USED_GRANULARITY:
            conn.execute(sa.update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=now))
    return Principal(
        key_id=row.id,
        project_id=row.project_id,
        team_id=row.team_id,
        plan=row.plan,
        scope=row.scope,
    )


def _epoch() -> bytes | None:
    """The current epoch, or None when Redis cannot say (then nothing cached is trusted)."""
    try:
        conn = redis_client.connection()
        epoch = conn.get(EPOCH_KEY)
        if epoch is None:  # a fresh or emptied Redis: start an epoch, trust nothing before it
            fresh = secrets.token_hex(8).encode()
            epoch = fresh if conn.set(EPOCH_KEY, fresh, nx=True) else conn.get(EPOCH_KEY)
        return epoch
    except RedisError as exc:
        logger.debug("API key cache bypassed (Redis unreachable): %s", exc)
        return None


def invalidate_cache() -> None:
    """Make every process drop its cached principals (call after the commit that changed them).

    If Redis cannot be reached, the processes that cannot reach it do not use their caches
    either; one that still can trusts its entries for at most ``CACHE_TTL``.
    """
    current_app.extensions.get(_CACHE, {}).clear()
    try:
        redis_client.connection().set(EPOCH_KEY, secrets.token_hex(8))
    except RedisError as exc:
        logger.error(
            "API key cache: could not start a new epoch (Redis unreachable: %s); other "
            "processes may accept a revoked key for up to %d s",
            exc,
            CACHE_TTL,
        )


def revoke(key_id: int, project_ids: list[int]) -> bool:
    """Revoke a key if it belongs to one of ``project_ids``; return whether it did."""
    result = db.session.execute(
        sa.update(ApiKey)
        .where(
            ApiKey.id == key_id,
            ApiKey.project_id.in_(project_ids),
            ApiKey.revoked_at.is_(None),
        )
        .values(revoked_at=clock.utcnow())
    )
    db.session.commit()
    if result.rowcount == 1:
        invalidate_cache()
    return result.rowcount == 1


def list_keys(project_id: int) -> list[ApiKey]:
    """The project's keys, newest first (revoked ones included, marked)."""
    return list(
        db.session.execute(
            sa.select(ApiKey).where(ApiKey.project_id == project_id).order_by(ApiKey.id.desc())
        ).scalars()
    )
