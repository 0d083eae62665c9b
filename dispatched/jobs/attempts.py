"""The life of delivery attempts: claim a batch (DISPATCHED → STARTED), pull a project's due
attempts straight into a worker (QUEUED → STARTED), conclude a batch (COMPLETED, a retry, or
FAILED), hand back early ones."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask import current_app

from .. import callbacks, clock, endpoint_health, metrics, plans, retry, transport, webhooks
from ..extensions import db
from ..ids import new_id
from ..models import Attempt, Project
from ..outbound import Result
from .handoff import schedule, wake_projects
from .release import (
    HAND_OVER_BATCH,
    apply_back_pressure,
    flow_flags,
    lock_flow,
    mark_waiting,
    outcomes_by_project,
    press_locked,
    pressured,
    release_locked,
    settings_of,
)
from .transitions import S, jobs_table, move, move_many

logger = logging.getLogger(__name__)

#: An attempt reaching a worker up to this early waits it out; earlier goes back to the scheduler.
MAX_EARLY_SECONDS = 2.0
attempts_table = Attempt.__table__
projects_table = Project.__table__
Ref = tuple[str, int]


@dataclass(frozen=True)
class Delivery:
    """Everything a delivery thread needs to send one attempt and conclude it."""

    job_id: str
    attempt_id: str
    attempt_number: int
    project_id: int
    payload: Any
    url: str | None
    secrets: tuple[str, ...]
    #: Sent as ``Authorization: Bearer``; None when the project switched the header off.
    bearer_token: str | None
    timeout: int
    not_before: datetime
    retry_base: int
    max_retries: int
    #: The job's callback URLs (DESIGN.md §11; ``callbacks``).
    callback: str | None = None
    failure_callback: str | None = None


@dataclass(frozen=True)
class Finished:
    """A sent attempt: its delivery, what the endpoint did, and how late it started."""

    delivery: Delivery
    result: Result
    lateness_ms: int | None = None


def claim(holder: str | None, refs: list[Ref], worker_id: str) -> list[Delivery]:
    """DISPATCHED → STARTED for the attempts ``holder`` still holds, in one transaction, with
    their Attempt rows; the worker ``worker_id`` now holds them. Cancelled, superseded or
    re-released attempts fail the guard and are never sent; early ones are handed back."""
    if not refs:
        return []
    try:
        deliveries, early = claim_locked(holder, refs, worker_id, clock.utcnow())
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    for row in early:
        _hand_back(row.id, row.attempts, holder, row.next_attempt_at or row.scheduled_for, row.plan)
    return deliveries


def pull(project_ids: list[int], worker_id: str, room: int) -> list[Delivery]:
    """Release and claim the due attempts of ``project_ids`` straight into the worker
    ``worker_id`` (QUEUED → DISPATCHED → STARTED in one transaction, flow control applied as in
    ``release``): a job dispatched for now is sent by the worker that took the project's pull
    (``transport.admit``), with no release-loop hop and no second RQ job.

    At most ``room`` (the worker's free threads) and one group (HAND_OVER_BATCH): what stays
    due is left waiting for the release loop, which hands it to the other workers, so a burst
    spreads over the nodes. Projects with a ``ratePerSecond`` are left to the loop too: it
    spaces their releases by the rate's next token, which a pull (taking whatever one token
    allows now) would not."""
    ids = sorted(set(project_ids))
    if not ids:
        return []
    try:
        # First: a dispatch committed after this point queues a new pull.
        transport.due_taken(ids)
    except transport.TransportUnavailable as exc:
        logger.warning("could not clear the pull marks of projects %s: %s", ids, exc)
    settings = settings_of(ids)
    rated = [pid for pid in ids if pid in settings and settings[pid].rate is not None]
    mine = [pid for pid in ids if pid in settings and pid not in rated]
    left = rated + (mine if room <= 0 else [])
    if room <= 0:
        mine = []
    now = clock.utcnow()
    deliveries: list[Delivery] = []
    released = None
    try:
        if mine:
            states = {pid: lock_flow(pid) for pid in mine}
            released = release_locked(
                states,
                lambda: worker_id,
                limit=min(room, HAND_OVER_BATCH),
                one_group=True,
                now=now,
                settings=settings,
            )
            if released.refs:
                deliveries, _ = claim_locked(worker_id, released.refs, worker_id, now)
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    if left:
        mark_waiting(left)
    wake_projects(sorted(set(left) | (released.waiting if released else set())))
    return deliveries


def claim_locked(
    holder: str | None, refs: list[Ref], worker_id: str, now: datetime
) -> tuple[list[Delivery], list[Any]]:
    """``claim`` inside the caller's transaction: the deliveries, and the rows of attempts that
    came too early (the caller hands them back after its commit)."""
    wanted = dict(refs)
    rows = db.session.execute(_claim_select(), {"ids": list(wanted)}).all()
    live, early = [], []
    for row in rows:
        if row.status != S.DISPATCHED or row.attempts != wanted[row.id] - 1 or row.holder != holder:
            logger.info(
                "job %s attempt %d dropped: job is %s after %d attempts",
                row.id,
                wanted[row.id],
                row.status,
                row.attempts,
            )
            continue
        due = row.next_attempt_at or row.scheduled_for
        (early if (due - now).total_seconds() > MAX_EARLY_SECONDS else live).append(row)
    deliveries: list[Delivery] = []
    moved = move_many(
        [(row.id, row.attempts) for row in live],
        S.DISPATCHED,
        S.STARTED,
        guard={"holder": holder},
        increment=("attempts",),
        started_at=now,
        holder=worker_id,
        updated_at=now,
    )
    for row in (row for row in live if row.id in moved):
        deliveries.append(
            Delivery(
                job_id=row.id,
                attempt_id=new_id("att"),
                attempt_number=row.attempts + 1,
                project_id=row.project_id,
                payload=row.payload,
                url=row.webhook_url,
                secrets=webhooks.live_secrets(row, now),
                bearer_token=row.webhook_bearer_token if row.send_bearer else None,
                timeout=plans.get(row.plan).delivery_timeout,
                not_before=row.next_attempt_at or row.scheduled_for,
                retry_base=row.retry_base,
                max_retries=row.max_retries,
                callback=row.callback_url,
                failure_callback=row.failure_callback_url,
            )
        )
    if deliveries:
        db.session.execute(
            _attempt_insert(),
            [
                dict(id=d.attempt_id, job_id=d.job_id, number=d.attempt_number, started_at=now)
                for d in deliveries
            ],
        )
    return deliveries, early


@functools.cache
def _claim_select() -> sa.Select:
    """What a claim reads of its jobs (``ids``) and their projects; built once (the engine's hot
    statements are, see ``release``), from Core columns (no ORM compile step)."""
    job, project = jobs_table.c, projects_table.c
    return (
        plans.select_with_plan(
            job.id,
            job.status,
            job.attempts,
            job.holder,
            job.payload,
            job.next_attempt_at,
            job.scheduled_for,
            job.retry_base,
            job.max_retries,
            project.id.label("project_id"),
            project.webhook_url,
            project.webhook_secret,
            project.previous_webhook_secret,
            project.secret_rotated_at,
            project.webhook_bearer_token,
            project.send_bearer,
            job.callback_url,  # callbacks (DESIGN.md §11)
            job.failure_callback_url,
        )
        .join(jobs_table, job.project_id == project.id)
        .where(job.id.in_(sa.bindparam("ids", expanding=True)))
    )


@functools.cache
def _attempt_insert() -> sa.Insert:
    return sa.insert(attempts_table)


@functools.cache
def _attempt_finish() -> sa.Update:
    """Write an attempt's result (run with one parameter set per attempt)."""
    return (
        sa.update(attempts_table)
        .where(attempts_table.c.id == sa.bindparam("attempt_id"))
        .values(
            finished_at=sa.bindparam("finished"),
            duration_ms=sa.bindparam("duration_ms"),
            http_status=sa.bindparam("http_status"),
            response_excerpt=sa.bindparam("excerpt"),
            error=sa.bindparam("error"),
            outcome=sa.bindparam("outcome"),
            lateness_ms=sa.bindparam("lateness_ms"),
        )
    )


def _hand_back(job_id: str, attempts: int, holder: str | None, due: datetime, plan: str) -> None:
    """DISPATCHED → QUEUED: the attempt reached a worker before its time; schedule it again."""
    logger.warning(
        "job %s attempt %d reached a worker %.1fs early; rescheduled",
        job_id,
        attempts + 1,
        (due - clock.utcnow()).total_seconds(),
    )
    if move(
        job_id,
        [S.DISPATCHED],
        S.QUEUED,
        at_attempts=attempts,
        guard={"holder": holder},
        next_attempt_at=due,
        holder=None,
    ):
        schedule(job_id, attempts + 1, due, plans.get(plan).delivery_timeout)


def decide(
    attempt: int, retry_base: int, max_retries: int, result: Result, now: datetime
) -> tuple[str, dict[str, Any]]:
    """The job's next status after an attempt, and the columns that go with it."""
    if result.ok:
        return S.COMPLETED, dict(completed_at=now, next_attempt_at=None, last_error=None)
    if result.outcome == "gone" or attempt - retry_base > max_retries:
        return S.FAILED, dict(next_attempt_at=None, last_error=result.error)
    config = current_app.config
    wait = retry.delay(
        attempt - retry_base,
        config["RETRY_DELAYS"],
        config["RETRY_MAX_DELAY"],
        config["RETRY_JITTER"],
        result.retry_after,
    )
    return S.QUEUED, dict(next_attempt_at=now + timedelta(seconds=wait), last_error=result.error)


def conclude(finished: list[Finished]) -> dict[str, str | None]:
    """Record a batch of attempts' results and move each job on, in one transaction; apply the
    endpoints' back-pressure to their projects. Returns job id → new status (None: the job had
    moved on, e.g. the reconciler declared the worker lost; nothing was written for it)."""
    now = clock.utcnow()
    try:
        outcome, retries = _record(finished, now)
        results = [
            (f.delivery.project_id, f.result) for f in finished if outcome[f.delivery.job_id]
        ]
        apply_back_pressure(results, now)
        # Callbacks and endpoint health (DESIGN.md §11, §12): in this same transaction.
        callbacks.queue_concluded(finished, outcome, now)
        endpoint_health.record(results, now)
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    _after_record(finished, outcome, retries)
    return outcome


def conclude_and_continue(
    finished: list[Finished], worker_id: str, room: int, line: int = 0
) -> tuple[dict[str, str | None], list[Delivery]]:
    """The worker's recorder cycle in one transaction: ``conclude`` the batch, then release the
    same projects' next due attempts that wait for a slot (up to ``room``, flow control applied
    as in ``release``) and claim them for ``worker_id``. Work-conserving with no scheduler hop
    and no RQ job: a finished delivery starts its project's next one at once. ``line``: how
    many places of ``room`` are in the worker's line rather than free threads
    (``release.line_shares``).

    Returns job id → new status (as ``conclude``) and the deliveries to start."""
    now = clock.utcnow()
    projects = {f.delivery.project_id for f in finished}
    deliveries: list[Delivery] = []
    try:
        waiting, throttled, failing = flow_flags(projects)
        if room <= 0:
            waiting = set()
        outcome, retries = _record(finished, now)
        results = [
            (f.delivery.project_id, f.result) for f in finished if outcome[f.delivery.job_id]
        ]
        outcomes = outcomes_by_project(results)
        pressed = set(pressured(outcomes, throttled))
        health = endpoint_health.touched(results, failing)  # endpoint health (DESIGN.md §12)
        # Every flow row this cycle needs, locked in id order (no deadlock with other
        # releasers, which lock in id order too).
        states = {pid: lock_flow(pid) for pid in sorted(pressed | waiting | health)}
        press_locked({pid: outcomes[pid] for pid in pressed}, states, now)
        # Callbacks and endpoint health (DESIGN.md §11, §12); a resumed endpoint's held attempts
        # are released in this same cycle.
        callbacks.queue_concluded(finished, outcome, now)
        resumed = endpoint_health.record_locked(results, failing, states, now)
        if room > 0:
            waiting |= resumed
        if waiting:
            mine = {pid: states[pid] for pid in waiting}
            released = release_locked(
                mine, lambda: worker_id, limit=room, one_group=True, line=line, now=now
            )
            if released.refs:
                deliveries, _ = claim_locked(worker_id, released.refs, worker_id, now)
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    _after_record(finished, outcome, retries)
    return outcome, deliveries


def _record(
    finished: list[Finished], now: datetime
) -> tuple[dict[str, str | None], list[tuple[str, int, datetime, int]]]:
    """Write a batch of results and move each job on (the caller's transaction); returns job id
    → new status (None: the job had moved on) and the retries to schedule after the commit."""
    outcome: dict[str, str | None] = {}
    retries: list[tuple[str, int, datetime, int]] = []
    done = [f for f in finished if f.result.ok]
    completed = move_many(
        [(f.delivery.job_id, f.delivery.attempt_number) for f in done],
        S.STARTED,
        S.COMPLETED,
        completed_at=now,
        next_attempt_at=None,
        last_error=None,
        updated_at=now,
    )
    outcome.update(
        {f.delivery.job_id: S.COMPLETED if f.delivery.job_id in completed else None for f in done}
    )
    for f in (f for f in finished if not f.result.ok):
        d = f.delivery
        status, values = decide(d.attempt_number, d.retry_base, d.max_retries, f.result, now)
        won = move(
            d.job_id, [S.STARTED], status, at_attempts=d.attempt_number, commit=False, **values
        )
        outcome[d.job_id] = status if won else None
        if won and status == S.QUEUED:
            retries.append((d.job_id, d.attempt_number + 1, values["next_attempt_at"], d.timeout))
    recorded = [f for f in finished if outcome[f.delivery.job_id] is not None]
    if recorded:
        db.session.execute(
            _attempt_finish(),
            [
                dict(
                    attempt_id=f.delivery.attempt_id,
                    finished=now,
                    duration_ms=f.result.duration_ms,
                    http_status=f.result.http_status,
                    excerpt=f.result.excerpt,
                    error=f.result.error,
                    outcome=f.result.outcome,
                    lateness_ms=f.lateness_ms,
                )
                for f in recorded
            ],
        )
    return outcome, retries


def _after_record(
    finished: list[Finished],
    outcome: dict[str, str | None],
    retries: list[tuple[str, int, datetime, int]],
) -> None:
    """After the commit: schedule the retries in the transport, count and log."""
    for job_id, attempt, when, timeout in retries:
        schedule(job_id, attempt, when, timeout)
    ended: dict[str, int] = {}
    for f in finished:
        status = outcome[f.delivery.job_id]
        if status is None:
            logger.warning(
                "job %s attempt %d finished (%s) but the job had moved on",
                f.delivery.job_id,
                f.delivery.attempt_number,
                f.result.outcome,
            )
        elif status != S.QUEUED:
            ended[status.lower()] = ended.get(status.lower(), 0) + 1
    metrics.count_jobs(ended)
