"""Teams, their projects and users."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from flask import current_app

from . import keys, plans, webhooks
from .errors import BadRequest, Conflict, NotFound, ServiceError
from .extensions import db
from .models import Project, ProjectFlow, Team, User

_hasher = PasswordHasher()


@dataclass
class NewTeam:
    team: Team
    project: Project
    api_key: str


def create_team(name: str, plan: str | None = None, webhook_url: str | None = None) -> NewTeam:
    """Create a team with its "default" project and a first API key, and commit."""
    created = add_team(name, plan, webhook_url)
    db.session.commit()
    return created


def add_team(name: str, plan: str | None = None, webhook_url: str | None = None) -> NewTeam:
    """Add a team with its "default" project and a first API key; flush only (caller commits)."""
    name = (name or "").strip()
    if not name or len(name) > 120:
        raise BadRequest(f"team name must be 1-120 characters, got {name!r}")
    plan = plan or current_app.config["DEFAULT_PLAN"]
    if plan not in plans.names():
        raise BadRequest(f"unknown plan {plan!r}; choose one of {', '.join(plans.names())}")
    team = Team(name=name, plan=plan)
    db.session.add(team)
    db.session.flush()
    project = create_project(team, "default", webhook_url)
    _, token = keys.create_key(project, "default")
    return NewTeam(team=team, project=project, api_key=token)


def create_project(team: Team, name: str, webhook_url: str | None = None) -> Project:
    """Add a project (an environment such as production/staging) to a team; flush only."""
    url = webhooks.validate_url(webhook_url) if webhook_url else None
    project = Project(
        team_id=team.id,
        name=name,
        webhook_url=url,
        webhook_secret=webhooks.new_secret(),
        webhook_bearer_token=webhooks.new_bearer_token(),
        send_bearer=True,
    )
    db.session.add(project)
    db.session.flush()
    db.session.add(ProjectFlow(project_id=project.id))
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
    user = add_user(email, password, team)
    db.session.commit()
    return user


def add_user(email: str, password: str, team: Team) -> User:
    """Add a user of ``team`` with an argon2 password hash; flush only (caller commits)."""
    email = (email or "").strip().lower()
    if "@" not in email or len(email) > 254:
        raise BadRequest(f"invalid email address {email!r}")
    if len(password or "") < 8:
        raise BadRequest("password must be at least 8 characters")
    if db.session.execute(sa.select(User.id).where(User.email == email)).first():
        raise Conflict(f"a user with email {email!r} already exists")
    user = User(email=email, password_hash=_hasher.hash(password), team_id=team.id)
    db.session.add(user)
    db.session.flush()
    return user


def sign_up(email: str, password: str, team_name: str) -> User:
    """Create a team (project "default", a first key) and its first user in one transaction."""
    email = (email or "").strip().lower()
    if db.session.execute(sa.select(User.id).where(User.email == email)).first():
        raise Conflict(f"a user with email {email!r} already exists")
    if len(password or "") < 8:
        raise BadRequest("password must be at least 8 characters")
    try:
        created = add_team(team_name, None)
        user = add_user(email, password, created.team)
    except ServiceError:
        db.session.rollback()
        raise
    db.session.commit()
    return user


def find_user(email: str) -> User | None:
    """Return the user with this email (case-insensitive), or None."""
    return db.session.execute(
        sa.select(User).where(User.email == (email or "").strip().lower())
    ).scalar_one_or_none()


def get_user(user_id: str) -> User | None:
    """Return the user whose id is the string ``user_id`` (a session's), or None."""
    return db.session.get(User, int(user_id)) if user_id.isdigit() else None


def authenticate_user(email: str, password: str) -> User | None:
    """Return the user with this email and password, or None."""
    user = find_user(email)
    if user is None:
        _hasher.hash(password or "x")  # same cost whether or not the email exists
        return None
    return user if check_password(user, password) else None


def projects_of(team_id: int) -> list[Project]:
    return list(
        db.session.execute(
            sa.select(Project).where(Project.team_id == team_id).order_by(Project.id)
        ).scalars()
    )


def project_named(team: Team, name: str) -> Project | None:
    """Return the team's project called ``name``, or None."""
    return db.session.execute(
        sa.select(Project).where(Project.team_id == team.id, Project.name == name)
    ).scalar_one_or_none()


def get_project(team_id: int, project_id: int) -> Project:
    """Return a project of the team, or raise NotFound (also for another team's project)."""
    project = db.session.get(Project, project_id)
    if project is None or project.team_id != team_id:
        raise NotFound(f"Project {project_id} not found")
    return project


def find_project(ref: str) -> Project:
    """Find any team's project by numeric id (the admin CLI's view), or raise NotFound."""
    ref = ref.strip()
    numeric = ref.isascii() and ref.isdigit() and len(ref) < 19  # fits a BIGINT
    project = db.session.get(Project, int(ref)) if numeric else None
    if project is None:
        raise NotFound(f"no project {ref!r}")
    return project


def add_project(team: Team, name: str) -> Project:
    """Create a named project (environment) for the team, and commit."""
    name = (name or "").strip()
    if not name or len(name) > 80:
        raise BadRequest(f"project name must be 1-80 characters, got {name!r}")
    exists = db.session.execute(
        sa.select(Project.id).where(Project.team_id == team.id, Project.name == name)
    ).first()
    if exists:
        raise Conflict(f"the team already has a project called {name!r}")
    project = create_project(team, name)
    db.session.commit()
    return project


def check_password(user: User, password: str) -> bool:
    try:
        return _hasher.verify(user.password_hash, password)
    except (VerifyMismatchError, InvalidHashError):
        return False
