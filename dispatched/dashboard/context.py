"""Tenant scoping for every dashboard page: a user only ever reaches their team's projects."""

from __future__ import annotations

from typing import Any

from flask import g
from flask_login import current_user

from .. import endpoint_health, plans, teams
from ..extensions import htmx
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
    project = g.get("project")
    return {
        "team": current_user.team,
        "projects": teams.projects_of(current_user.team_id),
        "current_project": project,
        "plan": plans.get(current_user.team.plan),
        # Every page of a project whose endpoint is paused shows a banner (DESIGN.md §12); the
        # htmx partials (polled every 2 s) have no banner, so they skip the query.
        "endpoint": endpoint_health.state(project.id) if project is not None and not htmx else None,
    }
