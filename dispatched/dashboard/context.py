"""Tenant scoping for every dashboard page: a user only ever reaches their team's projects."""

from __future__ import annotations

from typing import Any

from flask import g
from flask_login import current_user

from .. import plans, teams
from ..models import Project
from . import bp


def project_or_404(project_id: int) -> Project:
    """The current user's team's project ``project_id``; another team's is a 404."""
    project = teams.get_project(current_user.team_id, project_id)
    g.project = project
    return project


@bp.app_context_processor
def inject_navigation() -> dict[str, Any]:
    if not current_user.is_authenticated:
        return {}
    return {
        "team": current_user.team,
        "projects": teams.projects_of(current_user.team_id),
        "current_project": g.get("project"),
        "plan": plans.get(current_user.team.plan),
    }
