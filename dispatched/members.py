"""Team members and single-use invite links (the owner invites and removes; members look).

An invite token is shown once, in the link; only its SHA-256 is stored. Accepting it creates a
member of the team with a password of their choosing, at most once and within 7 days.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import sqlalchemy as sa

from . import clock, teams
from .errors import BadRequest, Conflict, NotFound
from .extensions import db
from .ids import random_base62
from .keys import hash_token
from .models import Invite, User

logger = logging.getLogger(__name__)

INVITE_LIFETIME = timedelta(days=7)


class InviteUnusable(Exception):
    """The invite link was used, withdrawn or has expired; the message says which."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def members_of(team_id: int) -> list[User]:
    """Return the team's users, oldest first (the owner leads)."""
    return list(
        db.session.execute(
            sa.select(User).where(User.team_id == team_id).order_by(User.created_at, User.id)
        ).scalars()
    )


def pending_invites(team_id: int) -> list[Invite]:
    """Return the team's invites that can still be accepted, newest first."""
    return list(
        db.session.execute(
            sa.select(Invite)
            .where(
                Invite.team_id == team_id,
                Invite.accepted_at.is_(None),
                Invite.revoked_at.is_(None),
                Invite.expires_at > clock.utcnow(),
            )
            .order_by(Invite.created_at.desc(), Invite.id.desc())
        ).scalars()
    )


def create_invite(owner: User) -> tuple[Invite, str]:
    """Create an invite to the owner's team and commit; return it and its token (shown once)."""
    token = random_base62(43)
    now = clock.utcnow()
    invite = Invite(
        team_id=owner.team_id,
        token_hash=hash_token(token),
        created_by_id=owner.id,
        created_at=now,
        expires_at=now + INVITE_LIFETIME,
    )
    db.session.add(invite)
    db.session.commit()
    logger.info("user %s created invite %s to team %s", owner.id, invite.id, owner.team_id)
    return invite, token


def revoke_invite(team_id: int, invite_id: int) -> None:
    """Withdraw a pending invite of the team and commit; another team's is a NotFound."""
    result = db.session.execute(
        sa.update(Invite)
        .where(
            Invite.id == invite_id,
            Invite.team_id == team_id,
            Invite.accepted_at.is_(None),
            Invite.revoked_at.is_(None),
        )
        .values(revoked_at=clock.utcnow())
    )
    if not result.rowcount:
        db.session.rollback()
        raise NotFound(f"Invite {invite_id} not found")
    db.session.commit()


def remove_member(owner: User, member_id: int) -> str:
    """Delete a member of the owner's team (their sessions go with them), commit; return the email.

    Raises:
        NotFound: no such user in the owner's team.
        BadRequest: the owner tried to remove themselves or another owner.
    """
    member = db.session.get(User, member_id)
    if member is None or member.team_id != owner.team_id:
        raise NotFound(f"Member {member_id} not found")
    if member.id == owner.id:
        raise BadRequest("you can't remove yourself: the team needs its owner")
    if member.role == teams.OWNER:
        raise BadRequest(f"{member.email} is an owner of the team and can't be removed")
    email = member.email
    # user_sessions rows cascade with the user: every cookie of theirs stops working.
    db.session.execute(sa.delete(User).where(User.id == member.id))
    db.session.commit()
    logger.info("user %s removed user %s from team %s", owner.id, member_id, owner.team_id)
    return email


def invite_for_token(token: str) -> Invite:
    """Return the invite of a link that can still be accepted.

    Raises:
        NotFound: no invite has this token.
        InviteUnusable: it was used, withdrawn or has expired.
    """
    invite = None
    if token and len(token) <= 200:
        invite = db.session.execute(
            sa.select(Invite).where(Invite.token_hash == hash_token(token))
        ).scalar_one_or_none()
    if invite is None:
        raise NotFound("No invite has this link; check that it was copied whole.")
    if invite.accepted_at is not None:
        raise InviteUnusable("This invite link has already been used. Ask for a new one.")
    if invite.revoked_at is not None:
        raise InviteUnusable("The team's owner withdrew this invite link. Ask for a new one.")
    if invite.expires_at <= clock.utcnow():
        raise InviteUnusable(
            f"This invite link expired on {invite.expires_at:%Y-%m-%d %H:%M} UTC. "
            "Ask for a new one."
        )
    return invite


def accept_invite(token: str, email: str, password: str) -> User | None:
    """Join the invite's team as a new member and commit; None when the email already has a user.

    A known email costs the same argon2 hash, leaves the invite usable and is only logged, so
    the caller can answer both cases alike.

    Raises:
        NotFound, InviteUnusable: as ``invite_for_token`` (also when a concurrent accept won).
        BadRequest: invalid email, or a password that is not 12-200 characters.
    """
    invite = invite_for_token(token)
    email = teams.valid_email(email)
    teams.check_new_password(password)
    existing = teams.find_user(email)
    if existing is not None:
        teams.hash_password(password)
        logger.info("invite %s given user %s's email: nothing created", invite.id, existing.id)
        return None
    now = clock.utcnow()
    claimed = db.session.execute(
        sa.update(Invite)
        .where(
            Invite.id == invite.id,
            Invite.accepted_at.is_(None),
            Invite.revoked_at.is_(None),
            Invite.expires_at > now,
        )
        .values(accepted_at=now)
    )
    if not claimed.rowcount:
        db.session.rollback()
        raise InviteUnusable("This invite link has already been used. Ask for a new one.")
    try:
        user = teams.add_user(email, password, invite.team)
        db.session.commit()
    except (Conflict, sa.exc.IntegrityError):  # a concurrent sign-up took the email
        db.session.rollback()
        return None
    logger.info("user %s joined team %s with invite %s", user.id, user.team_id, invite.id)
    return user
