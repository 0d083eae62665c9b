"""API keys: tokens are shown once; only their SHA-256 is stored (DESIGN.md §3)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa

from . import clock, plans
from .extensions import db
from .ids import random_base62
from .models import ApiKey, Project

TOKEN_PREFIX = "disp_k1_"
#: last_used_at is refreshed at most this often, so the hot path rarely writes.
LAST_USED_GRANULARITY = timedelta(seconds=60)


@dataclass(frozen=True)
class Principal:
    """Who a valid API key speaks for."""

    key_id: int
    project_id: int
    team_id: int
    plan: str


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def create_key(project: Project, label: str = "default") -> tuple[ApiKey, str]:
    """Create a key for ``project``, flush only; return it and the token (shown once)."""
    token = TOKEN_PREFIX + random_base62(32)
    key = ApiKey(
        project_id=project.id,
        label=label.strip()[:120] or "default",
        prefix=token[: len(TOKEN_PREFIX) + 4],
        token_hash=hash_token(token),
    )
    db.session.add(key)
    db.session.flush()
    return key, token


def issue_key(project: Project, label: str) -> tuple[ApiKey, str]:
    """Create a key for ``project`` and commit; return it and the token (shown once)."""
    key, token = create_key(project, label)
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
    return token


def authenticate(token: str) -> Principal | None:
    """Return the principal of a live key, or None for a missing/unknown/revoked one."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    row = db.session.execute(
        plans.select_with_plan(ApiKey.id, ApiKey.project_id, ApiKey.last_used_at, Project.team_id)
        .join(ApiKey, ApiKey.project_id == Project.id)
        .where(ApiKey.token_hash == hash_token(token), ApiKey.revoked_at.is_(None))
    ).first()
    if row is None:
        return None
    key_id, project_id, last_used_at, team_id, plan = row
    now = clock.utcnow()
    if last_used_at is None or now - last_used_at > LAST_USED_GRANULARITY:
        db.session.execute(sa.update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=now))
        db.session.commit()
    return Principal(key_id=key_id, project_id=project_id, team_id=team_id, plan=plan)


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
    return result.rowcount == 1


def list_keys(project_id: int) -> list[ApiKey]:
    """The project's keys, newest first (revoked ones included, marked)."""
    return list(
        db.session.execute(
            sa.select(ApiKey).where(ApiKey.project_id == project_id).order_by(ApiKey.id.desc())
        ).scalars()
    )
