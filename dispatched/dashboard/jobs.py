"""The live jobs table and the job page (actions through the job service)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from flask import current_app, flash, redirect, render_template, request, url_for
from flask_login import login_required

from .. import callbacks, clock, job_input, jobs
from ..errors import BadRequest, ServiceError
from ..extensions import htmx
from ..models import JobStatus
from . import bp
from .context import project_or_404
from .forms import ActionForm, RescheduleForm

PAGE_SIZE = 25


def _page(project_id: int) -> dict[str, Any]:
    """Parse the table's filters and load one page of rows."""
    status = request.args.get("status") or None
    search = (request.args.get("q") or "").strip() or None
    cursor = request.args.get("cursor") or None
    try:
        status = job_input.parse_status(status)
        rows, next_cursor = jobs.list_jobs(project_id, status, PAGE_SIZE, cursor, search)
    except BadRequest as exc:
        flash(exc.message, "error")
        status, cursor, rows, next_cursor = None, None, [], None
    return {
        "rows": rows,
        "next_cursor": next_cursor,
        "status": status or "",
        "q": search or "",
        "cursor": cursor or "",
        "statuses": JobStatus.ALL,
    }


@bp.get("/p/<int:project_id>/jobs")
@login_required
def jobs_page(project_id: int) -> Any:
    project_or_404(project_id)
    return render_template("dashboard/jobs.html", form=ActionForm(), **_page(project_id))


@bp.get("/p/<int:project_id>/jobs/rows")
@login_required
def jobs_rows(project_id: int) -> Any:
    """Just the table body: what the table's 2 s htmx poll swaps in."""
    project_or_404(project_id)
    return render_template("dashboard/_job_rows.html", form=ActionForm(), **_page(project_id))


@bp.get("/p/<int:project_id>/jobs/<job_id>")
@login_required
def job_page(project_id: int, job_id: str) -> Any:
    project = project_or_404(project_id)
    job = jobs.get(project.id, job_id)
    template = "dashboard/_job_panel.html" if htmx else "dashboard/job.html"
    return render_template(template, **_job_context(project.id, job))


def _job_context(project_id: int, job: Any) -> dict[str, Any]:
    return {
        "job": job,
        "attempts": jobs.attempts_of(project_id, job.id),
        "callbacks": callbacks.of_job(job.id),
        "payload_json": json.dumps(job.payload, indent=2, ensure_ascii=False),
        "form": ActionForm(),
        "reschedule_form": RescheduleForm(),
        "now": clock.utcnow(),
    }


def _after_action(project_id: int, job_id: str, message: str | None, error: str | None) -> Any:
    if htmx and request.headers.get("HX-Target", "").startswith("row-"):
        # A table row shows the outcome itself (new status badge); no flash to leak elsewhere.
        return render_template(
            "dashboard/_job_row.html", job=jobs.get(project_id, job_id), form=ActionForm()
        )
    if error:
        flash(error, "error")
    elif message:
        flash(message, "ok")
    if htmx:
        return render_template(
            "dashboard/_job_panel.html", **_job_context(project_id, jobs.get(project_id, job_id))
        )
    return redirect(url_for("dashboard.job_page", project_id=project_id, job_id=job_id))


def _act(
    project_id: int, job_id: str, action: Callable[[], object], done: str, refused: str
) -> Any:
    """Run a job-service action; a refusal (409, bad time) is shown, a 404 stays a 404."""
    jobs.get(project_id, job_id)
    try:
        action()
    except ServiceError as exc:
        return _after_action(project_id, job_id, None, f"{refused}: {exc.message}.")
    return _after_action(project_id, job_id, done, None)


@bp.post("/p/<int:project_id>/jobs/<job_id>/cancel")
@login_required
def cancel_job(project_id: int, job_id: str) -> Any:
    project = project_or_404(project_id)
    return _act(
        project.id,
        job_id,
        lambda: jobs.cancel(project.id, job_id),
        "Job cancelled.",
        "Not cancelled",
    )


@bp.post("/p/<int:project_id>/jobs/<job_id>/replay")
@login_required
def replay_job(project_id: int, job_id: str) -> Any:
    project = project_or_404(project_id)
    return _act(
        project.id,
        job_id,
        lambda: jobs.replay(project.id, job_id),
        "Job queued again with a fresh retry budget.",
        "Not replayed",
    )


@bp.post("/p/<int:project_id>/jobs/<job_id>/reschedule")
@login_required
def reschedule_job(project_id: int, job_id: str) -> Any:
    project = project_or_404(project_id)
    raw = (RescheduleForm().when.data or "").strip() or None

    def move() -> None:
        limit = current_app.config["MAX_SCHEDULE_DAYS"]
        when = job_input.parse_schedule(raw, "time", clock.utcnow(), limit)
        jobs.reschedule(project.id, job_id, when)

    return _act(project.id, job_id, move, "Job rescheduled.", "Not rescheduled")
