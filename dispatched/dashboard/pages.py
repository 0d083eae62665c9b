"""Overview, plan and project pages."""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, url_for
from flask_login import current_user, login_required

from .. import clock, flow_settings, plans, stats, teams, usage
from ..errors import ServiceError
from . import bp
from .charts import daily_chart
from .context import project_or_404
from .forms import ProjectForm


@bp.get("/")
def home() -> Any:
    if not current_user.is_authenticated:
        return redirect(url_for("dashboard.login"))
    first = teams.projects_of(current_user.team_id)[0]
    return redirect(url_for("dashboard.overview", project_id=first.id))


@bp.get("/p/<int:project_id>/")
@login_required
def overview(project_id: int) -> Any:
    project = project_or_404(project_id)
    plan = plans.get(current_user.team.plan)
    days = stats.jobs_per_day(project.id)
    return render_template(
        "dashboard/overview.html",
        usage=usage.summary(current_user.team_id, plan),
        chart=daily_chart(days),
        days=days,
        failures=stats.recent_failures(project.id),
        counts=stats.status_counts(project.id),
        lateness=stats.lateness(project.id),
        flow=flow_settings.flow_status(project),
        now=clock.utcnow(),
    )


@bp.get("/p/<int:project_id>/plan")
@login_required
def plan_page(project_id: int) -> Any:
    project_or_404(project_id)
    table = [plans.get(name) for name in plans.names()]
    return render_template("dashboard/plan.html", plans_table=table)


@bp.post("/projects")
@login_required
def create_project() -> Any:
    form = ProjectForm()
    if not form.validate_on_submit():
        flash("Give the project a name (1-80 characters).", "error")
        return redirect(url_for("dashboard.home"))
    try:
        project = teams.add_project(current_user.team, form.name.data)
    except ServiceError as exc:
        flash(exc.message, "error")
        return redirect(url_for("dashboard.home"))
    flash(f"Project {project.name!r} created. Give it a webhook URL and an API key.", "ok")
    return redirect(url_for("dashboard.webhook", project_id=project.id))
