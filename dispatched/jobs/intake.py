"""Accepting jobs: quota, idempotency, the insert, then the hand-off to the transport."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import IntegrityError

from .. import clock, metrics, plans, usage
from ..extensions import db
from ..ids import new_id
from ..job_input import DispatchInput
from ..keys import Principal
from ..models import Job
from .handoff import schedule, wake
from .transitions import S, set_fields


def create(principal: Principal, data: DispatchInput) -> tuple[Job, bool]:
    """Accept a job: count it against the quota, commit it, then hand it to Redis.

    A job is created QUEUED; one due now wakes the release loop (which releases it under the
    project's flow control within milliseconds), a later one is registered with the scheduler.
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

    due_now = data.schedule_for <= now
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
        callback_url=data.callback,
        failure_callback_url=data.failure_callback,
        created_at=now,
        updated_at=now,
    )
    try:
        db.session.add(job)
        # INSERT first: the team's quota row is then locked only from its UPDATE to COMMIT,
        # so concurrent dispatches of one team queue up for one round trip, not three.
        db.session.flush()
        usage.consume(principal.team_id, plan, now)
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
    if due_now:
        wake(job.id, principal.project_id)
    else:
        schedule(job.id, 1, data.schedule_for, plan.delivery_timeout)
    metrics.count_job("dispatched")
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
    set_fields(job.id, idempotency_key=None)
    return None


def add_fired(
    team_id: int, plan: plans.Plan, items: list[tuple[int, str, DispatchInput]], now: datetime
) -> list[str | None]:
    """Insert the jobs of a team's schedule fires ``(project id, schedule id, input)``, in
    order, as far as the monthly quota allows, in the caller's transaction (the schedule
    service commits them with the fires' records, then wakes the release loop).

    Returns the new job ids, None for each fire the quota had no room for.
    """
    allowed = usage.consume_up_to(team_id, plan, len(items), now)
    rows = [
        {
            "id": new_id("job"),
            "project_id": project_id,
            "status": S.QUEUED,
            "payload": data.payload,
            "scheduled_for": data.schedule_for,
            "next_attempt_at": data.schedule_for,
            "max_retries": data.max_retries,
            "attempts": 0,
            "retry_base": 0,
            "needs_handoff": False,
            "created_at": now,
            "updated_at": now,
            "schedule_id": schedule_id,
        }
        for project_id, schedule_id, data in items[:allowed]
    ]
    if rows:
        # Core executemany (psycopg pipelines it): no ORM bookkeeping per row.
        db.session.execute(sa.insert(Job.__table__), rows)
    return [row["id"] for row in rows] + [None] * (len(items) - allowed)
