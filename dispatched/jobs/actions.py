"""What users do to a job through the API or the dashboard: cancel, reschedule, replay."""

from __future__ import annotations

from datetime import datetime

from .. import clock, metrics, plans, usage
from ..errors import Conflict
from ..extensions import db
from ..models import Job, Project
from .handoff import forget, hand_over, schedule, wake
from .queries import get, reload
from .transitions import S, move


def cancel(project_id: int, job_id: str) -> Job:
    """QUEUED → CANCELLED, and take the pending attempt out of Redis.

    Raises:
        NotFound: no such job in the project.
        Conflict: the job is not QUEUED (already dispatched, running or finished).
    """
    job = get(project_id, job_id)
    now = clock.utcnow()
    if not move(job.id, [S.QUEUED], S.CANCELLED, cancelled_at=now, next_attempt_at=None):
        raise _not_queued(job)
    forget(job.id, job.next_attempt_number)
    metrics.count_job("cancelled")
    return reload(job)


def reschedule(project_id: int, job_id: str, when: datetime) -> Job:
    """Move a QUEUED job's next attempt to ``when`` (now or in the past = dispatch now).

    Raises:
        NotFound: no such job in the project.
        Conflict: the job is not QUEUED.
    """
    job = get(project_id, job_id)
    attempt = job.next_attempt_number
    timeout = plans.of_project(project_id).delivery_timeout
    now = clock.utcnow()
    if when <= now:
        if not move(
            job.id,
            [S.QUEUED],
            S.QUEUED,
            at_attempts=job.attempts,
            scheduled_for=now,
            next_attempt_at=now,
        ):
            raise _not_queued(job)
        forget(job.id, attempt)
        wake(job.id, project_id)
        return reload(job)
    if not move(
        job.id,
        [S.QUEUED],
        S.QUEUED,
        at_attempts=job.attempts,
        scheduled_for=when,
        next_attempt_at=when,
    ):
        raise _not_queued(job)
    schedule(job.id, attempt, when, timeout)
    return reload(job)


def replay(project_id: int, job_id: str) -> Job:
    """FAILED → QUEUED with a fresh retry budget, delivered now.

    A replay is one more job toward the team's monthly quota (DESIGN.md §4), consumed in the
    transaction of the transition: when the quota is spent the job stays FAILED.

    Raises:
        NotFound: no such job in the project.
        Conflict: the job is not FAILED.
        LimitReached: the team's monthly quota is used up.
    """
    job = get(project_id, job_id)
    now = clock.utcnow()
    plan, team_id = _plan_and_team(project_id)
    try:
        moved = move(
            job.id,
            [S.FAILED],
            S.QUEUED,
            commit=False,
            retry_base=job.attempts,
            next_attempt_at=now,
            completed_at=None,
        )
        if moved:
            usage.consume(team_id, plan, now)
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    if not moved:
        reload(job)
        raise Conflict("Job is not in FAILED status", jobId=job.id, status=job.status)
    job = reload(job)
    hand_over(job.id, job.next_attempt_number, project_id, now, plan.delivery_timeout)
    metrics.count_job("replayed")
    return reload(job)


def _plan_and_team(project_id: int) -> tuple[plans.Plan, int]:
    """The plan and team id of ``project_id`` (one query)."""
    row = db.session.execute(
        plans.select_with_plan(Project.team_id).where(Project.id == project_id)
    ).one()
    return plans.get(row.plan), row.team_id


def _not_queued(job: Job) -> Conflict:
    """The refusal of a QUEUED-only action; ``job`` is re-read so callers see its real state."""
    reload(job)
    return Conflict("Job is not in QUEUED status", jobId=job.id, status=job.status)
