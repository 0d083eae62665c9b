"""Callbacks (DESIGN.md §11): tell the application how its job ended.

A dispatch may carry ``callback`` (called when the job COMPLETED) and ``failureCallback``
(called when it FAILED). The callback is made in the same transaction that records the job's
outcome (``queue_concluded``, ``queue_failed``), so it is never lost: a ``callbacks`` row with
its fixed JSON body, ``pending``. The delivery engine that concluded the job sends it at once on
its threads (``claim`` → POST → ``record``), signed like a delivery with the project's secret
and bearer token, under the same SSRF and https rules. A failed callback is retried
``MAX_RETRIES`` times after the configured retry delays; the reconciler hands due retries, and
callbacks stranded by a dead worker, to the workers (``hand_over_due``). Callbacks never count
toward the quota. ``jobs.callback_status`` mirrors the job's latest callback for the API.

Callback states: ``pending`` → ``sending`` (a worker holds it) → ``delivered``; or back to
``pending`` for a retry; or ``failed`` once its retries are spent (or on 410 Gone).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import sqlalchemy as sa
from flask import current_app

from . import clock, metrics, plans, retry, signing, transport, webhooks, workers
from .extensions import db
from .ids import new_id
from .models import Callback, Job, JobStatus, Project
from .outbound import CONNECT_TIMEOUT, Result

logger = logging.getLogger(__name__)

#: A callback is retried this many times after its first attempt (DESIGN.md §11).
MAX_RETRIES = 3
PENDING, SENDING, DELIVERED, FAILED = "pending", "sending", "delivered", "failed"
#: What ``callbackStatus`` shows for each state (a callback being sent is still pending).
JOB_STATUS = {PENDING: PENDING, SENDING: PENDING, DELIVERED: DELIVERED, FAILED: FAILED}
COMPLETED_KIND, FAILED_KIND = "completed", "failed"
#: A handed-over callback that no worker claimed within this long is handed over again.
REHAND_AFTER = timedelta(seconds=30)
#: Callbacks per RQ job when the reconciler hands them to the workers.
HAND_OVER_BATCH = 20
#: Most due callbacks handed over in one reconciler pass.
HAND_OVER_LIMIT = 1000
#: A claimed callback is sent if due within this many seconds.
EARLY = timedelta(seconds=2)

table = Callback.__table__


class _Delivery(Protocol):
    job_id: str
    attempt_number: int
    callback: str | None
    failure_callback: str | None


class _Finished(Protocol):
    """A concluded attempt (``jobs.Finished``)."""

    @property
    def delivery(self) -> _Delivery: ...

    @property
    def result(self) -> Result: ...


@dataclass(frozen=True)
class Outgoing:
    """A claimed callback, ready for a delivery thread (no ORM objects)."""

    id: str
    job_id: str
    project_id: int
    kind: str
    url: str
    body: bytes
    #: This attempt's number (1 = the first).
    attempt: int
    secrets: tuple[str, ...]
    bearer_token: str | None
    timeout: int

    @property
    def webhook_id(self) -> str:
        """``<jobId>:completed`` or ``<jobId>:failed``: receivers dedupe on it."""
        return f"{self.job_id}:{self.kind}"

    def headers(self, timestamp: int, user_agent: str) -> dict[str, str]:
        """The signed headers of this attempt (the same as a delivery's)."""
        return signing.event_request(
            self.secrets,
            self.webhook_id,
            self.body,
            timestamp=timestamp,
            bearer_token=self.bearer_token,
            user_agent=user_agent,
        )


def _json(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def completed_body(job_id: str, attempt_number: int, result: Result) -> str:
    """The body of a ``callback``: the endpoint's HTTP status and its response excerpt."""
    return _json(
        {
            "type": "job.completed",
            "jobId": job_id,
            "attemptNumber": attempt_number,
            "status": result.http_status,
            "body": result.excerpt or "",
        }
    )


def failed_body(job_id: str, attempts: int, last_error: str | None) -> str:
    """The body of a ``failureCallback``: how many attempts were made and the last error."""
    return _json(
        {"type": "job.failed", "jobId": job_id, "attempts": attempts, "lastError": last_error}
    )


def _insert(rows: list[dict[str, Any]]) -> None:
    """Insert new pending callbacks and mark their jobs' callbackStatus pending (caller's
    transaction)."""
    if not rows:
        return
    db.session.execute(sa.insert(table), rows)
    db.session.execute(
        sa.update(Job.__table__)
        .where(Job.__table__.c.id.in_([row["job_id"] for row in rows]))
        .values(callback_status=PENDING)
    )
    logger.info("callbacks queued: %s", ", ".join(f"{r['job_id']}:{r['kind']}" for r in rows))


def _row(
    job_id: str, kind: str, url: str, body: str, now: datetime, handed: bool
) -> dict[str, Any]:
    return dict(
        id=new_id("cb"),
        job_id=job_id,
        kind=kind,
        url=url,
        body=body,
        state=PENDING,
        attempts=0,
        next_attempt_at=now,
        handed_at=now if handed else None,
        created_at=now,
        updated_at=now,
    )


def wanted(finished: Iterable[_Finished], statuses: dict[str, str | None]) -> list[str]:
    """Ids of the jobs whose new status (as ``jobs.conclude_and_continue`` answers) calls a
    callback."""
    ids = []
    for f in finished:
        d, status = f.delivery, statuses.get(f.delivery.job_id)
        if (status == JobStatus.COMPLETED and d.callback) or (
            status == JobStatus.FAILED and d.failure_callback
        ):
            ids.append(d.job_id)
    return ids


def queue_concluded(
    finished: Sequence[_Finished], statuses: dict[str, str | None], now: datetime
) -> None:
    """Create the callbacks that a batch of concluded attempts calls for, in the concluding
    transaction. The engine that concluded them sends them at once (``claim(job_ids=…)``),
    so they are marked handed over; the reconciler takes over if it does not."""
    rows = []
    for f in finished:
        d, status = f.delivery, statuses.get(f.delivery.job_id)
        if status == JobStatus.COMPLETED and d.callback:
            body = completed_body(d.job_id, d.attempt_number, f.result)
            rows.append(_row(d.job_id, COMPLETED_KIND, d.callback, body, now, handed=True))
        elif status == JobStatus.FAILED and d.failure_callback:
            body = failed_body(d.job_id, d.attempt_number, f.result.error)
            rows.append(_row(d.job_id, FAILED_KIND, d.failure_callback, body, now, handed=True))
    _insert(rows)


def queue_failed(job_id: str, attempts: int, last_error: str | None, now: datetime) -> None:
    """The job FAILED outside the engine (its worker was lost): create its failureCallback, if
    it has one, in the caller's transaction; the reconciler hands it over."""
    url = db.session.execute(
        sa.select(Job.failure_callback_url).where(Job.id == job_id)
    ).scalar_one_or_none()
    if url:
        body = failed_body(job_id, attempts, last_error)
        _insert([_row(job_id, FAILED_KIND, url, body, now, handed=False)])


def claim(
    worker_id: str, *, ids: Sequence[str] = (), job_ids: Sequence[str] = ()
) -> list[Outgoing]:
    """Take due pending callbacks (by id, or the new ones of ``job_ids``) for ``worker_id``:
    ``pending → sending``, one compare-and-set; commit. Returns what to send; callbacks that
    another worker took, or that are not due, are left alone."""
    if not ids and not job_ids:
        return []
    now = clock.utcnow()
    condition = (
        table.c.id.in_(list(ids))
        if ids
        else sa.and_(table.c.job_id.in_(list(job_ids)), table.c.attempts == 0)
    )
    try:
        claimed = list(
            db.session.execute(
                sa.update(table)
                .where(condition, table.c.state == PENDING, table.c.next_attempt_at <= now + EARLY)
                .values(
                    state=SENDING,
                    holder=worker_id,
                    attempts=table.c.attempts + 1,
                    started_at=now,
                    updated_at=now,
                )
                .returning(table.c.id)
            ).scalars()
        )
        rows = (
            db.session.execute(
                plans.select_with_plan(
                    Callback.id,
                    Callback.job_id,
                    Callback.kind,
                    Callback.url,
                    Callback.body,
                    Callback.attempts,
                    Project.id.label("project_id"),
                    Project.webhook_secret,
                    Project.previous_webhook_secret,
                    Project.secret_rotated_at,
                    Project.webhook_bearer_token,
                    Project.send_bearer,
                )
                .join(Job, Job.project_id == Project.id)
                .join(Callback, Callback.job_id == Job.id)
                .where(Callback.id.in_(claimed))
            ).all()
            if claimed
            else []
        )
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    return [
        Outgoing(
            id=row.id,
            job_id=row.job_id,
            project_id=row.project_id,
            kind=row.kind,
            url=row.url,
            body=row.body.encode("utf-8"),
            attempt=row.attempts,
            secrets=webhooks.live_secrets(row, now),
            bearer_token=row.webhook_bearer_token if row.send_bearer else None,
            timeout=plans.get(row.plan).delivery_timeout,
        )
        for row in rows
    ]


def _next(attempt: int, result: Result, now: datetime) -> dict[str, Any]:
    """The columns after attempt ``attempt`` of a callback: delivered, a retry, or failed."""
    if result.ok:
        return dict(state=DELIVERED, finished_at=now, next_attempt_at=None)
    if result.outcome == "gone" or attempt > MAX_RETRIES:
        return dict(state=FAILED, finished_at=now, next_attempt_at=None)
    config = current_app.config
    wait = retry.delay(
        attempt,
        config["RETRY_DELAYS"],
        config["RETRY_MAX_DELAY"],
        config["RETRY_JITTER"],
        result.retry_after,
    )
    return dict(state=PENDING, next_attempt_at=now + timedelta(seconds=wait), handed_at=None)


def _conclude(
    callback_id: str, attempt: int, holder: str | None, result: Result, now: datetime
) -> str | None:
    """Record attempt ``attempt`` of a callback ``holder`` sends (caller's transaction);
    return its new state, or None when it had moved on (nothing written)."""
    values = _next(attempt, result, now)
    won = db.session.execute(
        sa.update(table)
        .where(
            table.c.id == callback_id,
            table.c.state == SENDING,
            table.c.attempts == attempt,
            table.c.holder.is_(None) if holder is None else table.c.holder == holder,
        )
        .values(
            holder=None,
            http_status=result.http_status,
            outcome=result.outcome,
            last_error=result.error,
            updated_at=now,
            **values,
        )
        .returning(table.c.job_id, table.c.created_at)
    ).first()
    if won is None:
        return None
    newer = (
        sa.select(table.c.id)
        .where(table.c.job_id == won.job_id, table.c.created_at > won.created_at)
        .exists()
    )
    # The job shows its latest callback: an older one (before a replay) finishing late does not
    # overwrite a newer one's state.
    db.session.execute(
        sa.update(Job.__table__)
        .where(Job.__table__.c.id == won.job_id, ~newer)
        .values(callback_status=JOB_STATUS[values["state"]])
    )
    return values["state"]


def record(outgoing: Outgoing, result: Result, holder: str) -> str | None:
    """Record what the callback's endpoint answered; commit. Returns the callback's new state
    (None: it had moved on, e.g. the reconciler declared the worker lost)."""
    now = clock.utcnow()
    try:
        state = _conclude(outgoing.id, outgoing.attempt, holder, result, now)
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    logger.info(
        "callback %s (%s) attempt %d → %s%s → %s",
        outgoing.id,
        outgoing.webhook_id,
        outgoing.attempt,
        result.outcome,
        f" (HTTP {result.http_status})" if result.http_status else "",
        state or "superseded",
    )
    if state is not None:
        metrics.count_callback(result.outcome if state == PENDING else state)
    return state


def hand_over_due() -> dict[str, int]:
    """The reconciler's part: fail over callbacks whose worker died (a failed attempt, then the
    retry rule), and hand the due pending ones to the workers. Returns what it did.

    Raises:
        TransportUnavailable: Redis is down (handed-over callbacks are handed again later).
    """
    lost = _fail_over_lost()
    now = clock.utcnow()
    try:
        due = list(
            db.session.execute(
                sa.select(table.c.id)
                .where(
                    table.c.state == PENDING,
                    table.c.next_attempt_at <= now,
                    sa.or_(table.c.handed_at.is_(None), table.c.handed_at < now - REHAND_AFTER),
                )
                .order_by(table.c.next_attempt_at)
                .limit(HAND_OVER_LIMIT)
            ).scalars()
        )
        if due:
            db.session.execute(
                sa.update(table)
                .where(table.c.id.in_(due), table.c.state == PENDING)
                .values(handed_at=now)
            )
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    for start in range(0, len(due), HAND_OVER_BATCH):
        transport.send_callbacks(due[start : start + HAND_OVER_BATCH])
    return {"callbacks_lost": lost, "callbacks_handed": len(due)}


def _fail_over_lost() -> int:
    """``sending`` callbacks whose worker stopped heartbeating, or with no result long after
    their timeout, count a failed attempt ("worker lost") and follow the retry rule."""
    now = clock.utcnow()
    grace = timedelta(seconds=current_app.config["WORKER_LOST_GRACE"] + CONNECT_TIMEOUT)
    rows = db.session.execute(
        plans.select_with_plan(Callback.id, Callback.attempts, Callback.holder, Callback.started_at)
        .join(Job, Job.project_id == Project.id)
        .join(Callback, Callback.job_id == Job.id)
        .where(Callback.state == SENDING)
    ).all()
    db.session.rollback()
    if not rows:
        return 0
    alive = workers.alive(now)
    lost = 0
    for row in rows:
        timeout = timedelta(seconds=plans.get(row.plan).delivery_timeout)
        if row.holder in alive and row.started_at > now - timeout - grace:
            continue
        reason = f"worker lost: {row.holder} gave no result for the callback"
        result = Result(outcome="worker_lost", duration_ms=None, error=reason)
        try:
            if _conclude(row.id, row.attempts, row.holder, result, now) is not None:
                lost += 1
            db.session.commit()
        except BaseException:
            db.session.rollback()
            raise
    return lost


def of_job(job_id: str) -> list[Callback]:
    """The job's callbacks, oldest first (the job page)."""
    return list(
        db.session.execute(
            sa.select(Callback).where(Callback.job_id == job_id).order_by(Callback.created_at)
        ).scalars()
    )
