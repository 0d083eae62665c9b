"""What users do to a job through the API or the dashboard: cancel, reschedule, replay."""

from __future__ import annotations

from datetime import datetime

from .. import clock, metrics, plans
from ..errors import Conflict
from ..models import Job
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

    Raises:
        NotFound: no such job in the project.
        Conflict: the job is not FAILED.
    """
    job = get(project_id, job_id)
    now = clock.utcnow()
    if not move(
        job.id,
        [S.FAILED],
        S.QUEUED,
        retry_base=job.attempts,
        next_attempt_at=now,
        completed_at=None,
    ):
        reload(job)
        raise Conflict("Job is not in FAILED status", jobId=job.id, status=job.status)
    job = reload(job)
    timeout = plans.of_project(project_id).delivery_timeout
    hand_over(job.id, job.next_attempt_number, project_id, now, timeout)
    metrics.count_job("replayed")
    return reload(job)


def _not_queued(job: Job) -> Conflict:
    """The refusal of a QUEUED-only action; ``job`` is re-read so callers see its real state."""
    reload(job)
    return Conflict("Job is not in QUEUED status", jobId=job.id, status=job.status)
