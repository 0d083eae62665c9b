"""Teams, their projects and users."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from flask import current_app

from . import keys, plans, webhooks
from .errors import BadRequest, Conflict, NotFound, ServiceError
from .extensions import db
from .models import Project, ProjectFlow, Team, User

logger = logging.getLogger(__name__)

_hashers: dict[tuple[tuple[str, int], ...], PasswordHasher] = {}


def _hasher() -> PasswordHasher:
    """argon2id with the app's ``ARGON2_PARAMS`` (the library's defaults unless configured)."""
    params = tuple(sorted(current_app.config.get("ARGON2_PARAMS", {}).items()))
    if params not in _hashers:
        _hashers[params] = PasswordHasher(**dict(params))
    return _hashers[params]


#: New passwords (sign-up, invites, password change, the CLI): 12-200 characters.
PASSWORD_MIN_LENGTH = 12
PASSWORD_MAX_LENGTH = 200
#: Roles: the team's first user is its owner (invites and removes members).
OWNER = "owner"
MEMBER = "member"


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
    name = valid_team_name(name)
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
    keys.invalidate_cache()  # cached API-key principals carry the team's plan


def create_user(email: str, password: str, team: Team) -> User:
    """Create a user of ``team`` with an argon2 password hash, and commit."""
    user = add_user(email, password, team)
    db.session.commit()
    return user


def valid_team_name(name: str | None) -> str:
    """Return the stripped team name, or raise BadRequest."""
    name = (name or "").strip()
    if not name or len(name) > 120:
        raise BadRequest(f"team name must be 1-120 characters, got {name!r}")
    return name


def valid_email(email: str | None) -> str:
    """Return the normalized (stripped, lower-case) email address, or raise BadRequest."""
    email = (email or "").strip().lower()
    if "@" not in email or len(email) > 254:
        raise BadRequest(f"invalid email address {email!r}")
    return email


def check_new_password(password: str | None) -> None:
    """Raise BadRequest unless ``password`` is 12-200 characters long."""
    if not PASSWORD_MIN_LENGTH <= len(password or "") <= PASSWORD_MAX_LENGTH:
        raise BadRequest(
            f"password must be {PASSWORD_MIN_LENGTH}-{PASSWORD_MAX_LENGTH} characters, "
            f"got {len(password or '')}"
        )


def hash_password(password: str) -> str:
    """Return the argon2 hash of ``password``."""
    return _hasher().hash(password)


def add_user(email: str, password: str, team: Team) -> User:
    """Add a user of ``team`` (its owner if it is the first); flush only (caller commits)."""
    email = valid_email(email)
    check_new_password(password)
    if db.session.execute(sa.select(User.id).where(User.email == email)).first():
        raise Conflict(f"a user with email {email!r} already exists")
    first = not db.session.execute(sa.select(User.id).where(User.team_id == team.id)).first()
    user = User(
        email=email,
        password_hash=hash_password(password),
        team_id=team.id,
        role=OWNER if first else MEMBER,
    )
    db.session.add(user)
    db.session.flush()
    return user


def sign_up(email: str, password: str, team_name: str) -> User | None:
    """Create a team and its owner in one transaction; None when the email already has a user.

    Bad input raises BadRequest whether or not the email is known; a known email costs the same
    argon2 hash and is only logged, so the caller can answer both cases alike.
    """
    email = valid_email(email)
    check_new_password(password)
    valid_team_name(team_name)
    existing = find_user(email)
    if existing is not None:
        hash_password(password)
        logger.info("sign-up with the email of user %s: nothing created", existing.id)
        return None
    try:
        created = add_team(team_name, None)
        user = add_user(email, password, created.team)
        db.session.commit()
    except (Conflict, sa.exc.IntegrityError):  # a concurrent sign-up took the email
        db.session.rollback()
        logger.info("sign-up raced another one for the same email: nothing created")
        return None
    except ServiceError:
        db.session.rollback()
        raise
    return user


def find_user(email: str) -> User | None:
    """Return the user with this email (case-insensitive), or None."""
    return db.session.execute(
        sa.select(User).where(User.email == (email or "").strip().lower())
    ).scalar_one_or_none()


def authenticate_user(email: str, password: str) -> User | None:
    """Return the user with this email and password, or None."""
    user = find_user(email)
    if user is None:
        _hasher().hash(password or "x")  # same cost whether or not the email exists
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
    """Return whether ``password`` is the user's (argon2 verify)."""
    try:
        return _hasher().verify(user.password_hash, password)
    except (VerifyMismatchError, InvalidHashError):
        return False
