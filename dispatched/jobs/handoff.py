"""Handing attempts to the transport, and the release loop's decision (``on_tick``).

The DB commit always happens before anything is put in Redis: if Redis is down, the job waits
in the DB (flagged ``needs_handoff``) and the reconciler hands it over later.
"""

from __future__ import annotations

import logging
from datetime import datetime

import sqlalchemy as sa

from .. import clock, plans, transport
from ..extensions import db
from ..ids import new_id
from ..models import Job
from .release import mark_waiting, release, room_for_hand_over, waiting_projects
from .transitions import S, move, set_fields

logger = logging.getLogger(__name__)


def on_tick(due: list[tuple[str, int]], woken: set[int]) -> transport.Tick:
    """Decide one pass of the release loop: check the due scheduled attempts against the DB
    (drop cancelled or superseded ones, keep ones rescheduled later), then release what flow
    control allows for their projects, the woken ones and those waiting."""
    tick = transport.Tick(decisions=dict.fromkeys(due, False))
    now = clock.utcnow()
    projects = set(woken)
    try:
        if due:
            rows = db.session.execute(
                sa.select(
                    Job.id, Job.status, Job.attempts, Job.next_attempt_at, Job.project_id
                ).where(Job.id.in_({job_id for job_id, _ in due}))
            ).all()
            by_id = {row.id: row for row in rows}
            for job_id, attempt in due:
                row = by_id.get(job_id)
                if row is None or row.status != S.QUEUED or row.attempts != attempt - 1:
                    continue
                if row.next_attempt_at is not None and row.next_attempt_at > now:
                    tick.decisions[(job_id, attempt)] = row.next_attempt_at
                else:
                    tick.decisions[(job_id, attempt)] = True
                    projects.add(row.project_id)
        ready, tick.next_wake = waiting_projects(now)
        projects.update(ready)
        room, live = room_for_hand_over() if projects else (None, 0)
    finally:
        # The long-lived scheduler session never stays inside a transaction, even after a DB
        # error (a failed transaction would make every later pass fail too).
        db.session.rollback()
    # Hand over no more than the workers have room for: what would wait in the RQ queue holds
    # its project's slots while idle workers of other nodes could not take it.
    released = release(
        projects, lambda: "rq:" + new_id("hand"), limit=room, spread=max(1, live), now=now
    )
    tick.groups = list(released.groups)
    if released.next_wake is not None:
        tick.next_wake = min(filter(None, [tick.next_wake, released.next_wake]))
    return tick


def mark_dispatched(job_id: str, attempt: int) -> bool:
    """QUEUED → DISPATCHED for the given pending attempt with no holder (repair and tests)."""
    return move(
        job_id,
        [S.QUEUED],
        S.DISPATCHED,
        at_attempts=attempt - 1,
        dispatched_at=clock.utcnow(),
        holder=None,
    )


def wake(job_id: str, project_id: int) -> bool:
    """Tell the release loop a QUEUED attempt of the project is due now; False (and flagged
    for the reconciler) if Redis is down."""
    try:
        transport.wake(project_id)
        return True
    except transport.TransportUnavailable as exc:
        logger.warning(
            "job %s is due but stays QUEUED in the DB, Redis unreachable: %s "
            "(the reconciler will release it)",
            job_id,
            exc,
        )
        set_fields(job_id, needs_handoff=True)
        return False


def wake_projects(project_ids: list[int]) -> None:
    """Tell the release loop these projects have due attempts waiting (flagged in SQL); best
    effort: without Redis the loop still finds them on its next pass."""
    for project_id in project_ids:
        try:
            transport.wake(project_id)
        except transport.TransportUnavailable as exc:
            logger.warning(
                "project %d has due attempts waiting; could not wake the release loop: %s "
                "(it looks at waiting projects every pass)",
                project_id,
                exc,
            )
            return


def hand_over(job_id: str, attempt: int, project_id: int, when: datetime, timeout: int) -> bool:
    """A QUEUED attempt for ``when``: wake the release loop if due, else schedule it."""
    if when <= clock.utcnow():
        return wake(job_id, project_id)
    return schedule(job_id, attempt, when, timeout)


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
        # Harmless: the release loop checks the DB and drops a stale attempt.
        logger.warning(
            "job %s attempt %d: could not remove it from Redis: %s", job_id, attempt, exc
        )


def rehand(job_id: str) -> bool:
    """Hand a QUEUED job to the transport again (the reconciler found nothing holds it): due
    ones are marked waiting for the release loop, later ones scheduled. Returns success."""
    job = db.session.get(Job, job_id, populate_existing=True)
    if job is None or job.status != S.QUEUED:
        db.session.rollback()
        return True
    when = job.next_attempt_at or clock.utcnow()
    if when <= clock.utcnow():
        mark_waiting([job.project_id])
        ok = True
    else:
        timeout = plans.of_project(job.project_id).delivery_timeout
        ok = schedule(job.id, job.next_attempt_number, when, timeout)
    if ok and job.needs_handoff:
        set_fields(job_id, needs_handoff=False)
    return ok


def clear_handoff_flag(job_id: str) -> None:
    """The reconciler handed the job over: it no longer needs attention."""
    set_fields(job_id, needs_handoff=False)
