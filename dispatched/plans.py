"""Plan limits (DESIGN.md §3), read from the app config's ``PLANS`` table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from flask import current_app

from .extensions import db
from .models import Project, Team


@dataclass(frozen=True)
class Plan:
    name: str
    rate_per_minute: int
    monthly_quota: int | None
    retry_cap: int
    payload_max_bytes: int
    delivery_timeout: int
    #: Most attempts of one project DISPATCHED or STARTED at once (DESIGN.md §9).
    parallelism: int = 250
    #: Most schedules a team may have (DESIGN.md §13); None = unlimited.
    max_schedules: int | None = None

    @property
    def rate_limit(self) -> str:
        """The limit in Flask-Limiter's notation, e.g. ``"60 per minute"``."""
        return f"{self.rate_per_minute} per minute"


def names() -> list[str]:
    """Return the configured plan names."""
    return list(current_app.config["PLANS"])


def get(name: str) -> Plan:
    """Return the plan called ``name``; an unknown name falls back to the default plan."""
    table = current_app.config["PLANS"]
    limits = table.get(name) or table[current_app.config["DEFAULT_PLAN"]]
    return Plan(name=name if name in table else current_app.config["DEFAULT_PLAN"], **limits)


def all_plans() -> list[Plan]:
    """Return every configured plan."""
    return [get(name) for name in names()]


def select_with_plan(*columns: Any) -> sa.Select:
    """``SELECT columns…, teams.plan FROM projects JOIN teams``: the one place a plan is found.

    Callers join what they start from to ``Project`` (a job, a key) and read the plan's name as
    the last column (``row.plan``); ``get(row.plan)`` turns it into limits.
    """
    projects, teams = Project.__table__, Team.__table__
    # Tables, not ORM entities: with Core columns (the delivery engine's hot statements) the
    # statement then skips the ORM's compile step.
    return (
        sa.select(*columns, teams.c.plan.label("plan"))
        .select_from(projects)
        .join(teams, teams.c.id == projects.c.team_id)
    )


def of_project(project_id: int) -> Plan:
    """Return the plan of the team owning ``project_id``."""
    name = db.session.execute(select_with_plan().where(Project.id == project_id)).scalar()
    return get(name or "")
