"""Periodic repair (DESIGN.md §4): SQL is the truth, Redis is made to agree with it.

- QUEUED/DISPATCHED jobs that Redis does not hold (Redis restarted empty, an enqueue failed)
  are handed to Redis again. A full scan runs when Redis has lost our epoch marker (it was
  flushed or restarted without persistence); otherwise only suspicious jobs are checked:
  flagged hand-offs, overdue QUEUED jobs and long-DISPATCHED ones.
- STARTED jobs older than their plan's delivery timeout + a grace period lost their worker:
  the attempt is recorded as "worker_lost" and the normal retry rule applies.

Runs in the scheduler process every RECONCILE_INTERVAL seconds (one at a time, under a Redis
lock) and once with ``flask --app wsgi admin reconcile``.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import sqlalchemy as sa
from flask import current_app
from redis.exceptions import RedisError

from . import clock, jobs, plans, redis_client, transport
from .extensions import db
from .models import Job, JobStatus, Project

logger = logging.getLogger(__name__)

EPOCH_KEY = "dispatched:reconciler:epoch"
LOCK_KEY = "dispatched:reconciler:lock"
#: Jobs touched more recently than this are left alone (their hand-off may be in flight).
SETTLE = timedelta(seconds=3)
BATCH = 1000
#: A pass killed midway (the process died) blocks the next ones for at most this long.
LOCK_SECONDS = 60


def reconcile(full: bool = False) -> dict[str, int]:
    """Run one repair pass; return what it did. Raises TransportUnavailable if Redis is down."""
    conn = redis_client.connection()
    try:
        if not conn.set(LOCK_KEY, "1", nx=True, ex=LOCK_SECONDS):
            return {"skipped": 1}
        full = full or not conn.exists(EPOCH_KEY)
    except RedisError as exc:
        raise transport.TransportUnavailable(str(exc)) from exc
    try:
        # Lost workers first: that part needs only the DB, so a Redis error below can't skip it.
        lost = _fail_over_lost()
        report = {"full": int(full), **_rehand_missing(full), **lost}
        if full:
            conn.set(EPOCH_KEY, clock.isoformat(clock.utcnow()) or "")
    finally:
        conn.delete(LOCK_KEY)
    if report["rehanded"] or report["lost"]:
        logger.warning("reconciler: %s", report)
    return report


def _rehand_missing(full: bool) -> dict[str, int]:
    now = clock.utcnow()
    settled = now - SETTLE
    query = sa.select(Job.id, Job.attempts).where(
        Job.status.in_([JobStatus.QUEUED, JobStatus.DISPATCHED]), Job.updated_at < settled
    )
    if not full:
        query = query.where(
            sa.or_(
                Job.needs_handoff.is_(True),
                sa.and_(Job.status == JobStatus.QUEUED, Job.next_attempt_at < now - SETTLE),
                sa.and_(Job.status == JobStatus.DISPATCHED, Job.dispatched_at < settled),
            )
        )
    rows = db.session.execute(query.order_by(Job.id)).all()
    db.session.rollback()
    checked = rehanded = 0
    for start in range(0, len(rows), BATCH):
        batch = [(job_id, attempts + 1) for job_id, attempts in rows[start : start + BATCH]]
        held = transport.held(batch)
        checked += len(batch)
        for job_id, attempt in batch:
            if (job_id, attempt) not in held:
                jobs.rehand(job_id)
                rehanded += 1
    return {"checked": checked, "rehanded": rehanded}


def _fail_over_lost() -> dict[str, int]:
    now = clock.utcnow()
    grace = current_app.config["WORKER_LOST_GRACE"]
    shortest = min(plan.delivery_timeout for plan in plans.all_plans())
    rows = db.session.execute(
        plans.select_with_plan(Job.id, Job.attempts, Job.started_at)
        .join(Job, Job.project_id == Project.id)
        .where(
            Job.status == JobStatus.STARTED,
            Job.started_at < now - timedelta(seconds=shortest + grace),
        )
    ).all()
    db.session.rollback()
    lost = 0
    for job_id, attempt, started_at, plan_name in rows:
        limit = plans.get(plan_name).delivery_timeout + grace
        age = (now - started_at).total_seconds()
        if age > limit and jobs.fail_over_lost(job_id, attempt, age):
            lost += 1
    return {"lost": lost}
