"""Schedules pages: the list with a create form and its live preview, a schedule's page."""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from .. import clock, cron, job_input, plans, schedules
from ..errors import BadRequest, ServiceError
from . import bp
from .context import project_or_404
from .forms import ActionForm, ScheduleForm

PAGE_SIZE = 50
PREVIEW_COUNT = 5


def _preview(expression: str, timezone: str) -> dict[str, Any]:
    """The next fires of an expression, or the validation message."""
    try:
        fires = schedules.preview(expression, timezone or "UTC", PREVIEW_COUNT, clock.utcnow())
    except BadRequest as exc:
        return {"fires": [], "preview_error": exc.message}
    return {"fires": fires, "preview_error": None}


def _list_page(project_id: int, form: ScheduleForm, status: int = 200) -> Any:
    rows, _ = schedules.list_schedules(project_id, PAGE_SIZE, None)
    plan = plans.get(current_user.team.plan)
    context = {
        "rows": rows,
        "form": form,
        "action_form": ActionForm(),
        "zones": cron.zone_names(),
        "zone_of": cron.zone,
        "count": schedules.count(current_user.team_id),
        "cap": plan.max_schedules,
        **_preview(form.cron.data or "", form.timezone.data or "UTC"),
    }
    return render_template("dashboard/schedules.html", **context), status


@bp.get("/p/<int:project_id>/schedules")
@login_required
def schedules_page(project_id: int) -> Any:
    project = project_or_404(project_id)
    return _list_page(project.id, ScheduleForm())


@bp.get("/p/<int:project_id>/schedules/preview")
@login_required
def schedule_preview(project_id: int) -> Any:
    """The create form's live preview (htmx swaps it in as the fields change)."""
    project_or_404(project_id)
    context = _preview(request.args.get("cron", "")[:200], request.args.get("timezone", "")[:64])
    return render_template("dashboard/_schedule_preview.html", **context)


def _body(form: ScheduleForm) -> dict[str, Any]:
    """The API body the form stands for (the service validates it like the API's)."""
    body: dict[str, Any] = {
        "cron": form.cron.data or "",
        "timezone": (form.timezone.data or "").strip() or "UTC",
        "catchUp": form.catch_up.data,
        "payload": job_input.parse_json_body((form.payload.data or "{}").encode()),
    }
    if (form.name.data or "").strip():
        body["name"] = form.name.data
    retries = (form.max_retries.data or "").strip()
    if retries:
        body["maxRetries"] = int(retries) if retries.isdigit() else retries
    return body


@bp.post("/p/<int:project_id>/schedules")
@login_required
def create_schedule(project_id: int) -> Any:
    project = project_or_404(project_id)
    form = ScheduleForm()
    if not form.validate_on_submit():
        flash("Check the form: " + "; ".join(sum(form.errors.values(), [])), "error")
        return _list_page(project.id, form, 400)
    team = current_user.team
    try:
        spec = schedules.parse_create(_body(form), plans.get(team.plan))
        schedule = schedules.create(project.id, team.id, team.plan, spec)
    except ServiceError as exc:
        flash(f"Not created: {exc.message}", "error")
        return _list_page(project.id, form, exc.status if exc.status < 500 else 400)
    flash("Schedule created.", "ok")
    return redirect(
        url_for("dashboard.schedule_page", project_id=project.id, schedule_id=schedule.id)
    )


@bp.get("/p/<int:project_id>/schedules/<schedule_id>")
@login_required
def schedule_page(project_id: int, schedule_id: str) -> Any:
    project = project_or_404(project_id)
    schedule = schedules.get(project.id, schedule_id)
    recent, _ = schedules.jobs_of(project.id, schedule.id, None, 20, None)
    return render_template(
        "dashboard/schedule.html",
        schedule=schedule,
        jobs=recent,
        fires=schedules.fires_of(project.id, schedule.id, 20),
        upcoming=schedules.preview(schedule.cron, schedule.timezone, 5, clock.utcnow()),
        zone=cron.zone(schedule.timezone),
        form=ActionForm(),
    )


def _act(project_id: int, schedule_id: str, action: str) -> Any:
    project = project_or_404(project_id)  # CSRF: checked for every form post (CSRFProtect)
    if action == "delete":
        schedules.delete(project.id, schedule_id)
        flash("Schedule deleted: it fires no more (its jobs stay).", "ok")
        return redirect(url_for("dashboard.schedules_page", project_id=project.id))
    getattr(schedules, action)(project.id, schedule_id)
    flash("Schedule paused." if action == "pause" else "Schedule resumed.", "ok")
    if request.form.get("back") == "list":
        return redirect(url_for("dashboard.schedules_page", project_id=project.id))
    return redirect(
        url_for("dashboard.schedule_page", project_id=project.id, schedule_id=schedule_id)
    )


@bp.post("/p/<int:project_id>/schedules/<schedule_id>/pause")
@login_required
def pause_schedule(project_id: int, schedule_id: str) -> Any:
    return _act(project_id, schedule_id, "pause")


@bp.post("/p/<int:project_id>/schedules/<schedule_id>/resume")
@login_required
def resume_schedule(project_id: int, schedule_id: str) -> Any:
    return _act(project_id, schedule_id, "resume")


@bp.post("/p/<int:project_id>/schedules/<schedule_id>/delete")
@login_required
def delete_schedule(project_id: int, schedule_id: str) -> Any:
    return _act(project_id, schedule_id, "delete")
