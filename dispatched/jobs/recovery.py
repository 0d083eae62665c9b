"""Recovering attempts whose holder died (the reconciler's side of the job service)."""

from __future__ import annotations

import sqlalchemy as sa

from .. import callbacks, clock, metrics, plans
from ..extensions import db
from ..models import Attempt, Job, Project
from ..outbound import Result
from .attempts import attempts_table, decide
from .handoff import schedule
from .transitions import S, move


def fail_over_lost(job_id: str, attempt: int, reason: str) -> str | None:
    """The attempt's worker died: record a failed "worker_lost" attempt, then the retry rule."""
    row = db.session.execute(
        plans.select_with_plan(Job.retry_base, Job.max_retries, Attempt.id)
        .join(Job, Job.project_id == Project.id)
        .outerjoin(Attempt, sa.and_(Attempt.job_id == Job.id, Attempt.number == attempt))
        .where(Job.id == job_id)
    ).first()
    db.session.rollback()
    if row is None:
        return None
    now = clock.utcnow()
    result = Result(outcome="worker_lost", duration_ms=None, error=f"worker lost: {reason}")
    status, values = decide(attempt, row.retry_base, row.max_retries, result, now)
    try:
        if not move(job_id, [S.STARTED], status, at_attempts=attempt, commit=False, **values):
            db.session.rollback()
            return None
        if row.id is not None:
            db.session.execute(
                sa.update(attempts_table)
                .where(attempts_table.c.id == row.id)
                .values(finished_at=now, error=result.error, outcome=result.outcome)
            )
        if status == S.FAILED:  # its failureCallback (DESIGN.md §11)
            callbacks.queue_failed(job_id, attempt, result.error, now)
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    if status == S.QUEUED:
        schedule(
            job_id, attempt + 1, values["next_attempt_at"], plans.get(row.plan).delivery_timeout
        )
    else:
        metrics.count_job(status.lower())
    return status


def hand_back_dispatched(job_id: str, attempts: int, holder: str) -> bool:
    """DISPATCHED → QUEUED for an attempt its holder lost (worker died, RQ job gone); the
    scheduler releases it again. No attempt was made, so none is counted."""
    return move(
        job_id,
        [S.DISPATCHED],
        S.QUEUED,
        at_attempts=attempts,
        guard={"holder": holder},
        holder=None,
    )
