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
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import IntegrityError

from . import clock, metrics, plans, retry, transport, usage, webhooks
from .errors import BadRequest, Conflict, NotFound
from .extensions import db
from .ids import new_id
from .job_input import DispatchInput
from .keys import Principal
from .models import Attempt, Job, JobStatus, Project, Team
from .outbound import Result

logger = logging.getLogger(__name__)

_jobs = Job.__table__
S = JobStatus
#: An attempt reaching a worker up to this early waits it out; earlier goes back to the scheduler.
MAX_EARLY_SECONDS = 2.0


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
    project_id: int, status: str | None, limit: int, cursor: str | None, search: str | None = None
) -> tuple[list[Job], str | None]:
    """Return a page of the project's jobs, newest first, and the cursor of the next page.

    ``search`` matches the start of a job id (``job_3fZ`` finds ``job_3fZ…``).
    """
    query = sa.select(Job).where(Job.project_id == project_id)
    if status:
        query = query.where(Job.status == status)
    if search:
        query = query.where(Job.id.startswith(search[:40], autoescape=True))
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

    A job due now is created DISPATCHED (its time has come) in the same transaction, then
    enqueued; a later one is created QUEUED and registered with the scheduler. Returns the job
    and whether it was created (False: an idempotent repeat).

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
        status=S.DISPATCHED if due_now else S.QUEUED,
        dispatched_at=now if due_now else None,
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
        _enqueue(job.id, 1, plan.delivery_timeout)
    else:
        _schedule(job.id, 1, data.schedule_for, plan.delivery_timeout)
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
    metrics.count_job("cancelled")
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
    metrics.count_job("replayed")
    return _reload(job)


# --- transport hand-off --------------------------------------------------------------------


def mark_dispatched(job_id: str, attempt: int) -> bool:
    """QUEUED → DISPATCHED for the given pending attempt; False if someone else moved it."""
    now = clock.utcnow()
    return _cas(job_id, [S.QUEUED], attempts=attempt - 1, status=S.DISPATCHED, dispatched_at=now)


def on_due(attempts: list[tuple[str, int]]) -> dict[tuple[str, int], bool | datetime]:
    """Decide, in one pass, what the scheduler does with due attempts (DispatchScheduler).

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
        released: set[str] = set()
        for start in range(0, len(due), 500):
            chunk = due[start : start + 500]
            released.update(
                db.session.execute(
                    sa.update(_jobs)
                    .where(
                        sa.tuple_(_jobs.c.id, _jobs.c.attempts).in_(
                            [(job_id, attempt - 1) for job_id, attempt in chunk]
                        ),
                        _jobs.c.status == S.QUEUED,
                    )
                    .values(status=S.DISPATCHED, dispatched_at=now, updated_at=now)
                    .returning(_jobs.c.id)
                ).scalars()
            )
        db.session.commit()
    finally:
        # Never leave the long-lived scheduler session inside a transaction, even after a DB
        # error (a failed transaction would make every later tick fail too).
        db.session.rollback()
    for job_id, attempt in due:
        decisions[(job_id, attempt)] = job_id in released
    return decisions


def _hand_to_redis(job_id: str, attempt: int, when: datetime, timeout: int) -> bool:
    """Dispatch now if due (QUEUED → DISPATCHED, then enqueue), else register with the scheduler.

    Returns False if Redis could not take it (the job is flagged for the reconciler).
    """
    if when <= clock.utcnow():
        if mark_dispatched(job_id, attempt):
            return _enqueue(job_id, attempt, timeout)
        return True  # someone else moved it on
    return _schedule(job_id, attempt, when, timeout)


def _enqueue(job_id: str, attempt: int, timeout: int) -> bool:
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
        _flag_handoff(job_id)
        return False


def _schedule(job_id: str, attempt: int, when: datetime, timeout: int) -> bool:
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
        _flag_handoff(job_id)
        return False


def _flag_handoff(job_id: str) -> None:
    db.session.execute(sa.update(_jobs).where(_jobs.c.id == job_id).values(needs_handoff=True))
    db.session.commit()


def _forget(job_id: str, attempt: int) -> None:
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
    attempt, timeout = job.next_attempt_number, _timeout_of(job)
    if job.status == S.QUEUED:
        ok = _hand_to_redis(job.id, attempt, job.next_attempt_at or clock.utcnow(), timeout)
    else:
        ok = _enqueue(job.id, attempt, timeout)
    if ok and job.needs_handoff:
        db.session.execute(sa.update(_jobs).where(_jobs.c.id == job_id).values(needs_handoff=False))
        db.session.commit()
    return ok


# --- delivery (called by the delivery task and the reconciler) ------------------------------


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
        sa.select(
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
            Team.plan,
        )
        .join(Project, Project.id == Job.project_id)
        .join(Team, Team.id == Project.team_id)
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
        _requeue(job_id, attempt, due, timeout)
        return None
    attempt_id = new_id("att")
    try:
        changed = db.session.execute(
            sa.update(_jobs)
            .where(
                _jobs.c.id == job_id,
                _jobs.c.status == S.DISPATCHED,
                _jobs.c.attempts == attempt - 1,
            )
            .values(status=S.STARTED, attempts=attempt, started_at=now, updated_at=now)
        ).rowcount
        if changed != 1:
            db.session.rollback()
            return None
        db.session.execute(
            sa.insert(Attempt.__table__).values(
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
        sa.select(Job.retry_base, Job.max_retries, Team.plan, Attempt.id)
        .join(Project, Project.id == Job.project_id)
        .join(Team, Team.id == Project.team_id)
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
        values: dict[str, Any] = dict(
            status=S.COMPLETED, completed_at=now, next_attempt_at=None, last_error=None
        )
    elif result.outcome == "gone" or attempt - retry_base > max_retries:
        new_status = S.FAILED
        values = dict(status=S.FAILED, next_attempt_at=None, last_error=result.error)
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
        values = dict(status=S.QUEUED, next_attempt_at=next_at, last_error=result.error)
    try:
        changed = db.session.execute(
            sa.update(_jobs)
            .where(_jobs.c.id == job_id, _jobs.c.status == S.STARTED, _jobs.c.attempts == attempt)
            .values(updated_at=now, **values)
        ).rowcount
        if changed != 1:
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
                sa.update(Attempt.__table__)
                .where(Attempt.__table__.c.id == attempt_id)
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
        _schedule(job_id, attempt + 1, next_at, timeout)
    if new_status != S.QUEUED:
        metrics.count_job(new_status.lower())
    return new_status


def _requeue(job_id: str, attempt: int, when: datetime, timeout: int) -> None:
    """DISPATCHED → QUEUED: the attempt reached a worker before its time; schedule it again."""
    if _cas(job_id, [S.DISPATCHED], attempts=attempt - 1, status=S.QUEUED, next_attempt_at=when):
        _schedule(job_id, attempt, when, timeout)


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
