"""Schedule routes (DESIGN.md §13): parse → call the schedule service → serialize."""

from __future__ import annotations

from typing import Any

from flask import g, request

from .. import job_input, plans, schedules
from . import bp, serialize
from .auth import team_rate_limit
from .jobs import json_object_body

PREVIEW_PARAMETERS = ("count", "from")
TRY_PARAMETERS = ("cron", "timezone", "count", "from")
FIRES_PARAMETERS = ("limit",)


def _parameters(allowed: tuple[str, ...]) -> None:
    job_input.check_parameters([k for k, _ in request.args.items(multi=True)], allowed)


def _preview(expression: str, timezone: str) -> dict[str, Any]:
    fires = schedules.preview(
        expression,
        timezone,
        schedules.parse_count(request.args.get("count")),
        schedules.parse_from(request.args.get("from")),
    )
    return {"fires": [serialize.fire_time(fire) for fire in fires]}


@bp.post("/schedules")
@team_rate_limit
def create_schedule() -> tuple[dict[str, Any], int]:
    principal = g.principal
    spec = schedules.parse_create(json_object_body(), plans.get(principal.plan))
    schedule = schedules.create(principal.project_id, principal.team_id, principal.plan, spec)
    return serialize.schedule(schedule), 201


@bp.get("/schedules")
@team_rate_limit
def list_schedules() -> dict[str, Any]:
    _parameters(("limit", "cursor"))
    rows, next_cursor = schedules.list_schedules(
        g.principal.project_id,
        job_input.parse_limit(request.args.get("limit")),
        job_input.parse_cursor(request.args.get("cursor")),
    )
    return {"schedules": [serialize.schedule(s) for s in rows], "nextCursor": next_cursor}


@bp.get("/schedules/preview")
@team_rate_limit
def try_schedule() -> dict[str, Any]:
    """Preview an expression without creating a schedule (the dashboard's live preview)."""
    _parameters(TRY_PARAMETERS)
    return _preview(request.args.get("cron", ""), request.args.get("timezone", "UTC"))


@bp.get("/schedules/<schedule_id>")
@team_rate_limit
def get_schedule(schedule_id: str) -> dict[str, Any]:
    return serialize.schedule(schedules.get(g.principal.project_id, schedule_id))


@bp.patch("/schedules/<schedule_id>")
@team_rate_limit
def update_schedule(schedule_id: str) -> dict[str, Any]:
    schedules.get(g.principal.project_id, schedule_id)  # 404 before any body error
    changes = schedules.parse_patch(json_object_body(), plans.get(g.principal.plan))
    return serialize.schedule(schedules.update(g.principal.project_id, schedule_id, changes))


@bp.delete("/schedules/<schedule_id>")
@team_rate_limit
def delete_schedule(schedule_id: str) -> dict[str, Any]:
    return {"scheduleId": schedules.delete(g.principal.project_id, schedule_id), "deleted": True}


@bp.post("/schedules/<schedule_id>/pause")
@team_rate_limit
def pause_schedule(schedule_id: str) -> dict[str, Any]:
    return serialize.schedule(schedules.pause(g.principal.project_id, schedule_id))


@bp.post("/schedules/<schedule_id>/resume")
@team_rate_limit
def resume_schedule(schedule_id: str) -> dict[str, Any]:
    return serialize.schedule(schedules.resume(g.principal.project_id, schedule_id))


@bp.get("/schedules/<schedule_id>/preview")
@team_rate_limit
def preview_schedule(schedule_id: str) -> dict[str, Any]:
    schedule = schedules.get(g.principal.project_id, schedule_id)
    _parameters(PREVIEW_PARAMETERS)
    return _preview(schedule.cron, schedule.timezone)


@bp.get("/schedules/<schedule_id>/jobs")
@team_rate_limit
def schedule_jobs(schedule_id: str) -> dict[str, Any]:
    schedules.get(g.principal.project_id, schedule_id)
    _parameters(job_input.LIST_PARAMETERS)
    rows, next_cursor = schedules.jobs_of(
        g.principal.project_id,
        schedule_id,
        job_input.parse_status(request.args.get("status")),
        job_input.parse_limit(request.args.get("limit")),
        job_input.parse_cursor(request.args.get("cursor")),
    )
    return {"jobs": [serialize.job(job) for job in rows], "nextCursor": next_cursor}


@bp.get("/schedules/<schedule_id>/fires")
@team_rate_limit
def schedule_fires(schedule_id: str) -> dict[str, Any]:
    schedules.get(g.principal.project_id, schedule_id)
    _parameters(FIRES_PARAMETERS)
    limit = job_input.parse_limit(request.args.get("limit"))
    fires = schedules.fires_of(g.principal.project_id, schedule_id, limit)
    return {"scheduleId": schedule_id, "fires": [serialize.schedule_fire(f) for f in fires]}
