"""The life of one delivery attempt: start it (DISPATCHED → STARTED), conclude it (COMPLETED,
a retry, or FAILED), or fail it over when its worker died."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask import current_app

from .. import clock, metrics, plans, retry, webhooks
from ..extensions import db
from ..ids import new_id
from ..models import Attempt, Job, Project
from ..outbound import Result
from .handoff import schedule
from .transitions import S, move

logger = logging.getLogger(__name__)

#: An attempt reaching a worker up to this early waits it out; earlier goes back to the scheduler.
MAX_EARLY_SECONDS = 2.0
attempts_table = Attempt.__table__


@dataclass(frozen=True)
class Delivery:
    """Everything the delivery task needs to send one attempt and conclude it."""

    job_id: str
    attempt_id: str
    attempt_number: int
    payload: Any
    url: str | None
    secrets: tuple[str, ...]
    bearer: bool
    timeout: int
    not_before: datetime
    retry_base: int
    max_retries: int


def start_attempt(job_id: str, attempt: int) -> Delivery | None:
    """DISPATCHED → STARTED for ``attempt`` and open its Attempt row; None = drop the RQ job.

    A cancelled, already-delivered or superseded job fails the CAS and is never sent.
    """
    row = db.session.execute(
        plans.select_with_plan(
            Job.status,
            Job.attempts,
            Job.payload,
            Job.next_attempt_at,
            Job.scheduled_for,
            Job.retry_base,
            Job.max_retries,
            Project.webhook_url,
            Project.webhook_secret,
            Project.previous_webhook_secret,
            Project.secret_rotated_at,
            Project.send_bearer_secret,
        )
        .join(Job, Job.project_id == Project.id)
        .where(Job.id == job_id)
    ).first()
    if row is None or row.status != S.DISPATCHED or row.attempts != attempt - 1:
        db.session.rollback()
        logger.info(
            "job %s attempt %d dropped: job is %s",
            job_id,
            attempt,
            f"{row.status} after {row.attempts} attempts" if row else "gone",
        )
        return None
    now = clock.utcnow()
    timeout = plans.get(row.plan).delivery_timeout
    due = row.next_attempt_at or row.scheduled_for
    if (due - now).total_seconds() > MAX_EARLY_SECONDS:
        # Never deliver before the time: hand it back to the scheduler (defensive; the
        # scheduler checks the DB before releasing, so this means a stale Redis entry).
        db.session.rollback()
        logger.warning(
            "job %s attempt %d reached a worker %.1fs early; rescheduled",
            job_id,
            attempt,
            (due - now).total_seconds(),
        )
        if move(job_id, [S.DISPATCHED], S.QUEUED, at_attempts=attempt - 1, next_attempt_at=due):
            schedule(job_id, attempt, due, timeout)
        return None
    attempt_id = new_id("att")
    try:
        if not move(
            job_id,
            [S.DISPATCHED],
            S.STARTED,
            at_attempts=attempt - 1,
            commit=False,
            attempts=attempt,
            started_at=now,
            updated_at=now,
        ):
            db.session.rollback()
            return None
        db.session.execute(
            sa.insert(attempts_table).values(
                id=attempt_id, job_id=job_id, number=attempt, started_at=now
            )
        )
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    return Delivery(
        job_id=job_id,
        attempt_id=attempt_id,
        attempt_number=attempt,
        payload=row.payload,
        url=row.webhook_url,
        secrets=webhooks.live_secrets(row, now),
        bearer=row.send_bearer_secret,
        timeout=timeout,
        not_before=due,
        retry_base=row.retry_base,
        max_retries=row.max_retries,
    )


def finish_attempt(delivery: Delivery, result: Result) -> str | None:
    """Record an attempt's result and move the job on: COMPLETED, QUEUED (retry) or FAILED.

    Returns the new status, or None if the job was no longer this attempt's (the reconciler
    declared the worker lost meanwhile); then nothing is written.
    """
    return _conclude(
        delivery.job_id,
        delivery.attempt_number,
        delivery.attempt_id,
        result,
        delivery.retry_base,
        delivery.max_retries,
        delivery.timeout,
    )


def fail_over_lost(job_id: str, attempt: int, after_seconds: float) -> str | None:
    """STARTED for too long: the worker died. Count a failed "worker_lost" attempt, then retry."""
    row = db.session.execute(
        plans.select_with_plan(Job.retry_base, Job.max_retries, Attempt.id)
        .join(Job, Job.project_id == Project.id)
        .outerjoin(Attempt, sa.and_(Attempt.job_id == Job.id, Attempt.number == attempt))
        .where(Job.id == job_id)
    ).first()
    db.session.rollback()
    if row is None:
        return None
    result = Result(
        outcome="worker_lost",
        duration_ms=None,
        error=f"worker lost: no result {after_seconds:.0f}s after the attempt started",
    )
    timeout = plans.get(row.plan).delivery_timeout
    return _conclude(job_id, attempt, row.id, result, row.retry_base, row.max_retries, timeout)


def _conclude(
    job_id: str,
    attempt: int,
    attempt_id: str | None,
    result: Result,
    retry_base: int,
    max_retries: int,
    timeout: int,
) -> str | None:
    """STARTED (at ``attempt``) → COMPLETED / QUEUED / FAILED, with the attempt's record, in one
    transaction; the guarded UPDATE decides, so a superseded attempt writes nothing."""
    now = clock.utcnow()
    config = current_app.config
    next_at: datetime | None = None
    if result.ok:
        new_status = S.COMPLETED
        values: dict[str, Any] = dict(completed_at=now, next_attempt_at=None, last_error=None)
    elif result.outcome == "gone" or attempt - retry_base > max_retries:
        new_status = S.FAILED
        values = dict(next_attempt_at=None, last_error=result.error)
    else:
        wait = retry.delay(
            attempt - retry_base,
            config["RETRY_DELAYS"],
            config["RETRY_MAX_DELAY"],
            config["RETRY_JITTER"],
            result.retry_after,
        )
        next_at = now + timedelta(seconds=wait)
        new_status = S.QUEUED
        values = dict(next_attempt_at=next_at, last_error=result.error)
    try:
        if not move(
            job_id,
            [S.STARTED],
            new_status,
            at_attempts=attempt,
            commit=False,
            updated_at=now,
            **values,
        ):
            db.session.rollback()
            logger.warning(
                "job %s attempt %d finished (%s) but the job had moved on",
                job_id,
                attempt,
                result.outcome,
            )
            return None
        if attempt_id is not None:
            db.session.execute(
                sa.update(attempts_table)
                .where(attempts_table.c.id == attempt_id)
                .values(
                    finished_at=now,
                    duration_ms=result.duration_ms,
                    http_status=result.http_status,
                    response_excerpt=result.excerpt,
                    error=result.error,
                    outcome=result.outcome,
                )
            )
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    if next_at is not None:
        schedule(job_id, attempt + 1, next_at, timeout)
    if new_status != S.QUEUED:
        metrics.count_job(new_status.lower())
    return new_status
