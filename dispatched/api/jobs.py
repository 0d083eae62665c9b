"""Job routes: parse → call the job service → serialize."""

from __future__ import annotations

from typing import Any

from flask import current_app, g, request

from .. import clock, job_input, jobs, plans
from ..errors import UnsupportedMediaType
from . import bp, serialize
from .auth import team_rate_limit

JSON_TYPES = ("application/json",)


def json_object_body(max_bytes: int | None = None) -> dict[str, Any]:
    """Return the request body as a JSON object, or raise 400/415 (413 over ``max_bytes`` or
    the app's MAX_CONTENT_LENGTH)."""
    mimetype = request.mimetype
    if mimetype not in JSON_TYPES and not mimetype.endswith("+json"):
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, got {request.content_type or 'none'!r}"
        )
    if max_bytes is not None:
        limit = request.max_content_length
        request.max_content_length = max_bytes if limit is None else min(limit, max_bytes)
    return job_input.require_object(job_input.parse_json_body(request.get_data(cache=False)))


@bp.post("/jobs/dispatch")
@team_rate_limit
def dispatch() -> tuple[dict[str, Any], int]:
    plan = plans.get(g.principal.plan)
    data = job_input.parse_dispatch(
        json_object_body(),
        plan,
        request.headers.get("Idempotency-Key"),
        clock.utcnow(),
        current_app.config["MAX_SCHEDULE_DAYS"],
    )
    job, created = jobs.create(g.principal, data)
    return serialize.dispatched(job, created), 201 if created else 200


@bp.post("/jobs/dispatch/batch")
@team_rate_limit
def dispatch_batch() -> dict[str, Any]:
    body = json_object_body(job_input.BATCH_MAX_BYTES)
    items = job_input.parse_batch(
        body, plans.get(g.principal.plan), clock.utcnow(), current_app.config["MAX_SCHEDULE_DAYS"]
    )
    return {"results": [serialize.outcome(o) for o in jobs.create_many(g.principal, items)]}


@bp.get("/jobs")
@team_rate_limit
def list_jobs() -> dict[str, Any]:
    job_input.check_parameters(
        [k for k, _ in request.args.items(multi=True)], job_input.LIST_PARAMETERS
    )
    rows, next_cursor = jobs.list_jobs(
        g.principal.project_id,
        job_input.parse_status(request.args.get("status")),
        job_input.parse_limit(request.args.get("limit")),
        job_input.parse_cursor(request.args.get("cursor")),
    )
    return {"jobs": [serialize.job(job) for job in rows], "nextCursor": next_cursor}


@bp.get("/jobs/<job_id>")
@team_rate_limit
def get_job(job_id: str) -> dict[str, Any]:
    return serialize.job(jobs.get(g.principal.project_id, job_id))


@bp.delete("/jobs/<job_id>")
@team_rate_limit
def cancel_job(job_id: str) -> dict[str, Any]:
    job = jobs.cancel(g.principal.project_id, job_id)
    return {"jobId": job.id, "status": job.status}


@bp.patch("/jobs/<job_id>")
@team_rate_limit
def reschedule_job(job_id: str) -> dict[str, Any]:
    jobs.get(g.principal.project_id, job_id)  # 404 before any body error
    when = job_input.parse_reschedule(
        json_object_body(), clock.utcnow(), current_app.config["MAX_SCHEDULE_DAYS"]
    )
    return serialize.job(jobs.reschedule(g.principal.project_id, job_id, when))


@bp.get("/jobs/<job_id>/attempts")
@team_rate_limit
def job_attempts(job_id: str) -> dict[str, Any]:
    attempts = jobs.attempts_of(g.principal.project_id, job_id)
    return {"jobId": job_id, "attempts": [serialize.attempt(a) for a in attempts]}


@bp.post("/jobs/<job_id>/replay")
@team_rate_limit
def replay_job(job_id: str) -> dict[str, Any]:
    return serialize.job(jobs.replay(g.principal.project_id, job_id))
