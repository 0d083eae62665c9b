"""The job state machine (DESIGN.md §4): every status change of a job happens here.

Each transition is a compare-and-set ``UPDATE jobs SET … WHERE id = :id AND status IN (…)``
committed on its own, so two racing actors (two cancels, a cancel and the scheduler, a
worker and the reconciler) have exactly one winner; the loser sees rowcount 0.

The DB commit always happens before anything is put in Redis: if Redis is down, the job
waits in the DB (QUEUED or DISPATCHED) and the reconciler hands it to Redis later.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import IntegrityError

from . import clock, plans, scheduling, usage
from .errors import BadRequest, Conflict, NotFound
from .extensions import db
from .ids import new_id
from .job_input import DispatchInput
from .keys import Principal
from .models import Attempt, Job, JobStatus, Project, Team

logger = logging.getLogger(__name__)

_jobs = Job.__table__
S = JobStatus


# --- reading -------------------------------------------------------------------------------


def get(project_id: int, job_id: str) -> Job:
    """Return a job of the project, or raise NotFound (also for another project's job)."""
    job = db.session.get(Job, job_id) if _looks_like_job_id(job_id) else None
    if job is None or job.project_id != project_id:
        raise NotFound(f"Job {job_id!r} not found", jobId=job_id)
    return job


def _looks_like_job_id(job_id: str) -> bool:
    return (
        job_id.startswith("job_")
        and len(job_id) <= 40
        and job_id[4:].isalnum()
        and job_id.isascii()
    )


def list_jobs(
    project_id: int, status: str | None, limit: int, cursor: str | None
) -> tuple[list[Job], str | None]:
    """Return a page of the project's jobs, newest first, and the cursor of the next page."""
    query = sa.select(Job).where(Job.project_id == project_id)
    if status:
        query = query.where(Job.status == status)
    if cursor:
        created_at, last_id = _decode_cursor(cursor)
        query = query.where(
            sa.or_(
                Job.created_at < created_at, sa.and_(Job.created_at == created_at, Job.id < last_id)
            )
        )
    query = query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)
    rows = list(db.session.execute(query).scalars())
    next_cursor = _encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor


def _encode_cursor(job: Job) -> str:
    raw = f"{job.created_at.timestamp():.6f}|{job.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, job_id = raw.split("|", 1)
        created_at = datetime.fromtimestamp(float(stamp), tz=clock.utcnow().tzinfo)
    except (ValueError, binascii.Error, UnicodeError, OverflowError, OSError):
        raise BadRequest(f"cursor {cursor[:80]!r} is not a cursor from this API") from None
    if not _looks_like_job_id(job_id):
        raise BadRequest(f"cursor {cursor[:80]!r} is not a cursor from this API")
    return created_at, job_id


def attempts_of(project_id: int, job_id: str) -> list[Attempt]:
    """Return the attempt log of a job, oldest first."""
    job = get(project_id, job_id)
    return list(
        db.session.execute(
            sa.select(Attempt).where(Attempt.job_id == job.id).order_by(Attempt.number)
        ).scalars()
    )


# --- creating ------------------------------------------------------------------------------


def create(principal: Principal, data: DispatchInput) -> tuple[Job, bool]:
    """Accept a job: count it against the quota, commit it, then hand it to Redis.

    Returns the job and whether it was created (False: an idempotent repeat).

    Raises:
        LimitReached: the team's monthly quota is used up.
    """
    plan = plans.get(principal.plan)
    now = clock.utcnow()
    if data.idempotency_key:
        existing = _find_idempotent(principal.project_id, data.idempotency_key, now)
        if existing is not None:
            return existing, False

    job = Job(
        id=new_id("job"),
        project_id=principal.project_id,
        status=S.QUEUED,
        payload=data.payload,
        scheduled_for=data.schedule_for,
        next_attempt_at=data.schedule_for,
        max_retries=data.max_retries,
        attempts=0,
        retry_base=0,
        idempotency_key=data.idempotency_key,
        created_at=now,
        updated_at=now,
    )
    try:
        usage.consume(principal.team_id, plan, now)
        db.session.add(job)
        db.session.commit()
    except IntegrityError:
        # Another request with the same Idempotency-Key won the race: answer with its job.
        db.session.rollback()
        existing = _find_idempotent(principal.project_id, data.idempotency_key or "", now)
        if existing is None:
            raise
        return existing, False
    except BaseException:
        db.session.rollback()
        raise
    _hand_to_redis(
        job.id, job.next_attempt_number, job.next_attempt_at or now, plan.delivery_timeout
    )
    return job, True


def _find_idempotent(project_id: int, key: str, now: datetime) -> Job | None:
    job = db.session.execute(
        sa.select(Job).where(Job.project_id == project_id, Job.idempotency_key == key)
    ).scalar_one_or_none()
    if job is None:
        return None
    ttl = timedelta(hours=current_app.config["IDEMPOTENCY_TTL_HOURS"])
    if now - job.created_at < ttl:
        return job
    # The key expired: free it for the new job (the old job keeps everything else).
    db.session.execute(sa.update(_jobs).where(_jobs.c.id == job.id).values(idempotency_key=None))
    db.session.commit()
    return None


# --- user actions ----------------------------------------------------------------------------


def cancel(project_id: int, job_id: str) -> Job:
    """QUEUED → CANCELLED, and take the pending attempt out of Redis.

    Raises:
        NotFound: no such job in the project.
        Conflict: the job is not QUEUED (already dispatched, running or finished).
    """
    job = get(project_id, job_id)
    now = clock.utcnow()
    if not _cas(job.id, [S.QUEUED], status=S.CANCELLED, cancelled_at=now, next_attempt_at=None):
        raise _not_queued(job.id)
    _forget(job.id, job.next_attempt_number)
    return _reload(job)


def reschedule(project_id: int, job_id: str, when: datetime) -> Job:
    """Move a QUEUED job's next attempt to ``when`` (now or in the past = dispatch now).

    Raises:
        NotFound: no such job in the project.
        Conflict: the job is not QUEUED.
    """
    job = get(project_id, job_id)
    attempt = job.next_attempt_number
    now = clock.utcnow()
    if when <= now:
        if not _cas(
            job.id,
            [S.QUEUED],
            attempts=job.attempts,
            status=S.DISPATCHED,
            scheduled_for=now,
            next_attempt_at=now,
            dispatched_at=now,
        ):
            raise _not_queued(job.id)
        _forget(job.id, attempt)
        _enqueue(job.id, attempt, _timeout_of(job))
        return _reload(job)
    if not _cas(
        job.id, [S.QUEUED], attempts=job.attempts, scheduled_for=when, next_attempt_at=when
    ):
        raise _not_queued(job.id)
    _schedule(job.id, attempt, when, _timeout_of(job))
    return _reload(job)


def replay(project_id: int, job_id: str) -> Job:
    """FAILED → QUEUED with a fresh retry budget, delivered now.

    Raises:
        NotFound: no such job in the project.
        Conflict: the job is not FAILED.
    """
    job = get(project_id, job_id)
    now = clock.utcnow()
    if not _cas(
        job.id,
        [S.FAILED],
        status=S.QUEUED,
        retry_base=job.attempts,
        next_attempt_at=now,
        completed_at=None,
    ):
        raise Conflict("Job is not in FAILED status", jobId=job.id, status=job.status)
    job = _reload(job)
    _hand_to_redis(job.id, job.next_attempt_number, now, _timeout_of(job))
    return _reload(job)


# --- transport hand-off --------------------------------------------------------------------


def mark_dispatched(job_id: str, attempt: int) -> bool:
    """QUEUED → DISPATCHED for the given pending attempt; False if someone else moved it."""
    now = clock.utcnow()
    return _cas(job_id, [S.QUEUED], attempts=attempt - 1, status=S.DISPATCHED, dispatched_at=now)


def on_due(job_id: str, attempt: int) -> bool | datetime:
    """Decide what the scheduler does with a due attempt (see scheduling.DispatchScheduler).

    The DB is the source of truth: a cancelled or already-moved job is dropped, a job that was
    rescheduled later than Redis knew is held until its real time.
    """
    job = db.session.get(Job, job_id, populate_existing=True)
    if job is None or job.status != S.QUEUED or job.next_attempt_number != attempt:
        db.session.rollback()
        return False
    due = job.next_attempt_at or job.scheduled_for
    if due > clock.utcnow() + timedelta(seconds=1):
        db.session.rollback()
        return due
    return mark_dispatched(job_id, attempt)


def _hand_to_redis(job_id: str, attempt: int, when: datetime, timeout: int) -> None:
    """Dispatch now if due (QUEUED → DISPATCHED, then enqueue), else register with the scheduler."""
    if when <= clock.utcnow():
        if mark_dispatched(job_id, attempt):
            _enqueue(job_id, attempt, timeout)
    else:
        _schedule(job_id, attempt, when, timeout)


def _enqueue(job_id: str, attempt: int, timeout: int) -> None:
    try:
        scheduling.enqueue_now(job_id, attempt, timeout)
    except scheduling.TransportUnavailable as exc:
        logger.warning(
            "job %s attempt %d stays DISPATCHED in the DB, Redis unreachable: %s "
            "(the reconciler will enqueue it)",
            job_id,
            attempt,
            exc,
        )


def _schedule(job_id: str, attempt: int, when: datetime, timeout: int) -> None:
    try:
        scheduling.schedule_at(job_id, attempt, when, timeout)
    except scheduling.TransportUnavailable as exc:
        logger.warning(
            "job %s attempt %d stays QUEUED in the DB, Redis unreachable: %s "
            "(the reconciler will schedule it)",
            job_id,
            attempt,
            exc,
        )


def _forget(job_id: str, attempt: int) -> None:
    try:
        scheduling.unschedule(job_id, attempt)
    except scheduling.TransportUnavailable as exc:
        # Harmless: the scheduler and the worker check the DB and drop a stale attempt.
        logger.warning(
            "job %s attempt %d: could not remove it from Redis: %s", job_id, attempt, exc
        )


# --- helpers ---------------------------------------------------------------------------------


def _cas(
    job_id: str, from_statuses: Iterable[str], attempts: int | None = None, **values: Any
) -> bool:
    """Apply ``values`` if the job is in one of ``from_statuses`` (and at ``attempts``); commit."""
    stmt = sa.update(_jobs).where(_jobs.c.id == job_id, _jobs.c.status.in_(list(from_statuses)))
    if attempts is not None:
        stmt = stmt.where(_jobs.c.attempts == attempts)
    try:
        changed = db.session.execute(stmt.values(updated_at=clock.utcnow(), **values)).rowcount
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    return changed == 1


def _reload(job: Job) -> Job:
    db.session.refresh(job)
    return job


def _not_queued(job_id: str) -> Conflict:
    status = db.session.execute(sa.select(_jobs.c.status).where(_jobs.c.id == job_id)).scalar()
    return Conflict("Job is not in QUEUED status", jobId=job_id, status=status)


def _timeout_of(job: Job) -> int:
    team_plan = db.session.execute(
        sa.select(Team.plan)
        .join(Project, Project.team_id == Team.id)
        .where(Project.id == job.project_id)
    ).scalar()
    return plans.get(team_plan or "").delivery_timeout
