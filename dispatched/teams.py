"""Teams, their projects and users."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError

from . import keys, plans, webhooks
from .errors import BadRequest, Conflict, NotFound
from .extensions import db
from .models import Project, Team, User

_hasher = PasswordHasher()


@dataclass
class NewTeam:
    team: Team
    project: Project
    api_key: str


def create_team(name: str, plan: str | None = None, webhook_url: str | None = None) -> NewTeam:
    """Create a team with its "default" project and a first API key, and commit."""
    name = (name or "").strip()
    if not name or len(name) > 120:
        raise BadRequest(f"team name must be 1-120 characters, got {name!r}")
    plan = plan or plans.names()[0]
    if plan not in plans.names():
        raise BadRequest(f"unknown plan {plan!r}; choose one of {', '.join(plans.names())}")
    team = Team(name=name, plan=plan)
    db.session.add(team)
    db.session.flush()
    project = create_project(team, "default", webhook_url)
    _, token = keys.create_key(project, "default")
    db.session.commit()
    return NewTeam(team=team, project=project, api_key=token)


def create_project(team: Team, name: str, webhook_url: str | None = None) -> Project:
    """Add a project (an environment such as production/staging) to a team; flush only."""
    url = webhooks.validate_url(webhook_url) if webhook_url else None
    project = Project(
        team_id=team.id,
        name=name,
        webhook_url=url,
        webhook_secret=webhooks.new_secret(),
        send_bearer_secret=True,
    )
    db.session.add(project)
    db.session.flush()
    return project


def find_team(ref: str) -> Team:
    """Find a team by numeric id or exact name."""
    team = db.session.get(Team, int(ref)) if ref.isdigit() else None
    team = team or db.session.execute(sa.select(Team).where(Team.name == ref)).scalars().first()
    if team is None:
        raise NotFound(f"no team {ref!r}")
    return team


def set_plan(team: Team, plan: str) -> None:
    if plan not in plans.names():
        raise BadRequest(f"unknown plan {plan!r}; choose one of {', '.join(plans.names())}")
    team.plan = plan
    db.session.commit()


def create_user(email: str, password: str, team: Team) -> User:
    """Create a user of ``team`` with an argon2 password hash, and commit."""
    email = (email or "").strip().lower()
    if "@" not in email or len(email) > 254:
        raise BadRequest(f"invalid email address {email!r}")
    if len(password or "") < 8:
        raise BadRequest("password must be at least 8 characters")
    if db.session.execute(sa.select(User.id).where(User.email == email)).first():
        raise Conflict(f"a user with email {email!r} already exists")
    user = User(email=email, password_hash=_hasher.hash(password), team_id=team.id)
    db.session.add(user)
    db.session.commit()
    return user


def check_password(user: User, password: str) -> bool:
    try:
        return _hasher.verify(user.password_hash, password)
    except (VerifyMismatchError, InvalidHashError):
        return False
