"""Periodic repair (DESIGN.md §4): SQL is the truth, Redis is made to agree with it.

- STARTED attempts whose worker process stopped heartbeating (killed, its node gone) are
  failed over: recorded as "worker_lost", then the normal retry rule applies. So is one still
  STARTED after its plan's delivery timeout + WORKER_LOST_GRACE (a stuck request).
- DISPATCHED attempts whose holder is gone (a dead worker, an RQ hand-over job Redis lost)
  go back to QUEUED, to be released again; no attempt is counted.
- QUEUED jobs the transport does not hold are handed over again: due ones are marked waiting
  for the release loop, later ones rescheduled. A full scan runs when Redis has lost our epoch
  marker (flushed, or restarted without persistence); otherwise only suspicious jobs are
  checked: flagged hand-offs and overdue ones.
- Callbacks (``callbacks``): due retries, and ones whose worker died, go to the workers.

Runs in the scheduler process every RECONCILE_INTERVAL seconds (one at a time, under a Redis
lock) and once with ``flask --app wsgi admin reconcile``.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import sqlalchemy as sa
from flask import current_app
from redis.exceptions import RedisError

from . import callbacks, clock, jobs, plans, redis_client, transport, workers
from .extensions import db
from .ids import random_base62
from .jobs.release import mark_waiting
from .models import Job, JobStatus, Project

logger = logging.getLogger(__name__)

EPOCH_KEY = "dispatched:reconciler:epoch"
LOCK_KEY = "dispatched:reconciler:lock"
#: Jobs touched more recently than this are left alone (their hand-off may be in flight).
SETTLE = timedelta(seconds=3)
BATCH = 1000
#: A pass killed midway (its scheduler died) blocks the other schedulers' passes for at most
#: this long: short, so a dead worker's attempts are still failed over within ~20 s when the
#: scheduler that was reconciling dies too. A pass outliving it is harmless (every repair is a
#: compare-and-set) and leaves alone the lock another scheduler took meanwhile.
LOCK_SECONDS = 10
#: Delete the lock only if it is still ours (atomic in Redis).
_UNLOCK = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
#: A DISPATCHED attempt held by a worker (or by nobody) this long was stranded.
STRANDED = timedelta(seconds=30)


def reconcile(full: bool = False) -> dict[str, int]:
    """Run one repair pass; return what it did. Raises TransportUnavailable if Redis is down."""
    conn = redis_client.connection()
    token = random_base62(16)
    try:
        if not conn.set(LOCK_KEY, token, nx=True, ex=LOCK_SECONDS):
            return {"skipped": 1}
        full = full or not conn.exists(EPOCH_KEY)
    except RedisError as exc:
        raise transport.TransportUnavailable(str(exc)) from exc
    try:
        # Lost workers first: that part needs only the DB, so a Redis error below can't skip it.
        report = {"full": int(full), **_fail_over_lost()}
        report.update(_hand_back_stranded())
        report.update(_rehand_queued(full))
        report.update(callbacks.hand_over_due())
        if full:
            conn.set(EPOCH_KEY, clock.isoformat(clock.utcnow()) or "")
        workers.forget_dead()
    finally:
        conn.eval(_UNLOCK, 1, LOCK_KEY, token)
    if report["rehanded"] or report["lost"] or report["handed_back"]:
        logger.warning("reconciler: %s", report)
    return report


def _is_worker(holder: str | None) -> bool:
    return holder is not None and not holder.startswith("rq:")


def _fail_over_lost() -> dict[str, int]:
    now = clock.utcnow()
    grace = current_app.config["WORKER_LOST_GRACE"]
    rows = db.session.execute(
        plans.select_with_plan(Job.id, Job.attempts, Job.started_at, Job.holder)
        .join(Job, Job.project_id == Project.id)
        .where(Job.status == JobStatus.STARTED)
    ).all()
    # Who is alive is read after the attempts: a worker registers before it claims, so the
    # holder of every row read is in it. (Read before, a worker that started meanwhile and
    # claimed at once would look dead and have its first attempts failed over.)
    alive = workers.alive(clock.utcnow())
    db.session.rollback()
    lost = 0
    for row in rows:
        age = (now - row.started_at).total_seconds()
        if _is_worker(row.holder) and row.holder not in alive:
            reason = f"worker process {row.holder} stopped heartbeating ({age:.0f}s after start)"
        elif age > plans.get(row.plan).delivery_timeout + grace:
            reason = f"no result {age:.0f}s after the attempt started"
        else:
            continue
        if jobs.fail_over_lost(row.id, row.attempts, reason):
            lost += 1
    return {"lost": lost}


def _hand_back_stranded() -> dict[str, int]:
    """DISPATCHED attempts whose holder is gone go back to QUEUED (released again)."""
    now = clock.utcnow()
    rows = db.session.execute(
        sa.select(Job.id, Job.attempts, Job.holder, Job.dispatched_at, Job.project_id).where(
            Job.status == JobStatus.DISPATCHED, Job.updated_at < now - SETTLE
        )
    ).all()
    db.session.rollback()
    if not rows:
        return {"handed_back": 0}
    alive = workers.alive(now)
    live_rq = transport.live_holders(
        sorted({row.holder for row in rows if row.holder and not _is_worker(row.holder)})
    )
    handed_back, projects = 0, set()
    for row in rows:
        if _is_worker(row.holder):
            # A live worker claims what it released to itself within milliseconds.
            gone = row.holder not in alive or row.dispatched_at < now - STRANDED
        elif row.holder:
            gone = row.holder not in live_rq
        else:  # handed over without a holder (repair, an older version): judge by age
            gone = row.dispatched_at < now - STRANDED
        if gone and jobs.hand_back_dispatched(row.id, row.attempts, row.holder):
            handed_back += 1
            projects.add(row.project_id)
    mark_waiting(projects)
    return {"handed_back": handed_back}


def _rehand_queued(full: bool) -> dict[str, int]:
    now = clock.utcnow()
    settled = now - SETTLE
    query = sa.select(
        Job.id, Job.attempts, Job.project_id, Job.next_attempt_at, Job.needs_handoff
    ).where(Job.status == JobStatus.QUEUED, Job.updated_at < settled)
    if not full:
        query = query.where(sa.or_(Job.needs_handoff.is_(True), Job.next_attempt_at < settled))
    rows = db.session.execute(query.order_by(Job.id)).all()
    db.session.rollback()
    due = [row for row in rows if row.next_attempt_at is None or row.next_attempt_at <= now]
    later = [row for row in rows if row.next_attempt_at is not None and row.next_attempt_at > now]
    # Due attempts wait in SQL: flag their projects so the release loop looks at them.
    mark_waiting({row.project_id for row in due})
    flagged = [row.id for row in due if row.needs_handoff]
    rehanded = 0
    for start in range(0, len(later), BATCH):
        batch = [(row.id, row.attempts + 1) for row in later[start : start + BATCH]]
        held = transport.held(batch)
        for job_id, attempt in batch:
            if (job_id, attempt) not in held:
                jobs.rehand(job_id)
                rehanded += 1
    for job_id in flagged:
        jobs.clear_handoff_flag(job_id)
    return {"checked": len(rows), "rehanded": rehanded, "waiting": len(due)}
