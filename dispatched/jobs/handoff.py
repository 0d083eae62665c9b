"""Handing attempts to the transport, and releasing due ones (the scheduler asks ``on_due``).

The DB commit always happens before anything is put in Redis: if Redis is down, the job waits
in the DB (QUEUED or DISPATCHED, flagged ``needs_handoff``) and the reconciler hands it over
later.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import sqlalchemy as sa

from .. import clock, plans, transport
from ..extensions import db
from ..models import Job
from .transitions import S, move, move_many, set_fields

logger = logging.getLogger(__name__)


def mark_dispatched(job_id: str, attempt: int) -> bool:
    """QUEUED → DISPATCHED for the given pending attempt; False if someone else moved it."""
    return move(
        job_id, [S.QUEUED], S.DISPATCHED, at_attempts=attempt - 1, dispatched_at=clock.utcnow()
    )


def on_due(attempts: list[tuple[str, int]]) -> dict[tuple[str, int], bool | datetime]:
    """Decide, in one pass, what the scheduler does with due attempts.

    The DB is the source of truth: each attempt is released (True: the QUEUED → DISPATCHED
    transition was made, in one guarded UPDATE for the whole batch), dropped (False: cancelled,
    superseded, or another actor dispatched it first) or held until a later time (the job was
    rescheduled later than Redis knew).
    """
    decisions: dict[tuple[str, int], bool | datetime] = dict.fromkeys(attempts, False)
    if not attempts:
        return decisions
    now = clock.utcnow()
    try:
        rows = db.session.execute(
            sa.select(
                Job.id, Job.status, Job.attempts, Job.next_attempt_at, Job.scheduled_for
            ).where(Job.id.in_({job_id for job_id, _ in attempts}))
        ).all()
        by_id = {row.id: row for row in rows}
        due: list[tuple[str, int]] = []
        for job_id, attempt in attempts:
            row = by_id.get(job_id)
            if row is None or row.status != S.QUEUED or row.attempts != attempt - 1:
                continue
            when = row.next_attempt_at or row.scheduled_for
            if when > now + timedelta(seconds=1):
                decisions[(job_id, attempt)] = when
            else:
                due.append((job_id, attempt))
        released = move_many(
            [(job_id, attempt - 1) for job_id, attempt in due],
            S.QUEUED,
            S.DISPATCHED,
            dispatched_at=now,
            updated_at=now,
        )
        db.session.commit()
    finally:
        # Never leave the long-lived scheduler session inside a transaction, even after a DB
        # error (a failed transaction would make every later tick fail too).
        db.session.rollback()
    for job_id, attempt in due:
        decisions[(job_id, attempt)] = job_id in released
    return decisions


def hand_over(job_id: str, attempt: int, when: datetime, timeout: int) -> bool:
    """Dispatch now if due (QUEUED → DISPATCHED, then enqueue), else register with the scheduler.

    Returns False if Redis could not take it (the job is flagged for the reconciler).
    """
    if when <= clock.utcnow():
        if mark_dispatched(job_id, attempt):
            return enqueue(job_id, attempt, timeout)
        return True  # someone else moved it on
    return schedule(job_id, attempt, when, timeout)


def enqueue(job_id: str, attempt: int, timeout: int) -> bool:
    """Put a DISPATCHED attempt on the delivery queue; False (and flagged) if Redis is down."""
    try:
        transport.enqueue_now(job_id, attempt, timeout)
        return True
    except transport.TransportUnavailable as exc:
        logger.warning(
            "job %s attempt %d stays DISPATCHED in the DB, Redis unreachable: %s "
            "(the reconciler will enqueue it)",
            job_id,
            attempt,
            exc,
        )
        set_fields(job_id, needs_handoff=True)
        return False


def schedule(job_id: str, attempt: int, when: datetime, timeout: int) -> bool:
    """Register a QUEUED attempt for ``when``; False (and flagged) if Redis is down."""
    try:
        transport.schedule_at(job_id, attempt, when, timeout)
        return True
    except transport.TransportUnavailable as exc:
        logger.warning(
            "job %s attempt %d stays QUEUED in the DB, Redis unreachable: %s "
            "(the reconciler will schedule it)",
            job_id,
            attempt,
            exc,
        )
        set_fields(job_id, needs_handoff=True)
        return False


def forget(job_id: str, attempt: int) -> None:
    """Take an attempt out of the transport (best effort)."""
    try:
        transport.unschedule(job_id, attempt)
    except transport.TransportUnavailable as exc:
        # Harmless: the scheduler and the worker check the DB and drop a stale attempt.
        logger.warning(
            "job %s attempt %d: could not remove it from Redis: %s", job_id, attempt, exc
        )


def rehand(job_id: str) -> bool:
    """Hand a live job to Redis again (the reconciler found Redis does not hold it).

    QUEUED: schedule (or dispatch, if due) its pending attempt; DISPATCHED: enqueue it again.
    Returns whether Redis took it.
    """
    job = db.session.get(Job, job_id, populate_existing=True)
    if job is None or job.status not in (S.QUEUED, S.DISPATCHED):
        db.session.rollback()
        return True
    attempt, timeout = job.next_attempt_number, plans.of_project(job.project_id).delivery_timeout
    if job.status == S.QUEUED:
        ok = hand_over(job.id, attempt, job.next_attempt_at or clock.utcnow(), timeout)
    else:
        ok = enqueue(job.id, attempt, timeout)
    if ok and job.needs_handoff:
        set_fields(job_id, needs_handoff=False)
    return ok
