"""Accepting jobs, one or a batch: idempotency, quota, the insert, then the hand-off.

One path serves both: a single dispatch is a batch of one (``create``), a batch is validated
item by item by ``job_input`` and accepted here in order (``create_many``). The database work is
a few multi-row statements whatever the batch size (DESIGN.md §10):

1. the items' idempotency keys, looked up at once (expired ones freed);
2. the new jobs, counted against the quota and inserted in **one statement**. On PostgreSQL it
   runs in autocommit, so the server commits it in the same round trip::

       WITH g AS (UPDATE monthly_usage SET jobs = jobs + :n
                  WHERE team_id = :team AND month = :month AND jobs + :n <= :quota
                  RETURNING jobs)
       INSERT INTO jobs (…) SELECT … FROM (VALUES (…), (…)) AS v WHERE EXISTS (SELECT FROM g)

   No BEGIN/COMMIT round trips, no second transaction, and the team's counter row is locked
   only while the server runs the statement, never while this process waits for the GIL (the
   lock convoy of bench/README). When not all of them fit, the statement inserts nothing; the
   counter is read and the first items that fit are inserted instead, the rest refused with
   LIMIT_REACHED. SQLite runs the same steps in one transaction (its write lock serializes);
3. the hand-off of the created jobs to Redis in one pipeline (``transport.admit``): for the
   jobs due now, a worker is asked to pull the project's due attempts (a mark and, when none
   is pending yet, one RQ job: a second round trip), one ``ZADD`` for the timed ones, and the
   metrics counter. If Redis is down the jobs stay in the database, flagged for the
   reconciler.

The 201 promise holds: the statement has committed before anything goes to Redis or back to
the client.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import IntegrityError

from .. import clock, metrics, plans, transport, usage
from ..errors import ServiceError
from ..extensions import autocommit, db
from ..ids import new_id
from ..job_input import DispatchInput
from ..keys import Principal
from ..models import Job
from .transitions import S, jobs_table

logger = logging.getLogger(__name__)

#: A concurrent request inserting the same idempotency key makes our insert fail as a whole;
#: the keys are then looked up again (each retry sees at least one more of them taken).
IDEMPOTENCY_RETRIES = 5
#: Quota re-reads before giving up (each one either inserts or shrinks what is asked for).
QUOTA_ROUNDS = 8


@dataclass(frozen=True)
class Outcome:
    """What became of one item: its job (new or the original of an idempotent repeat), or the
    error that refused it (an invalid item, LIMIT_REACHED)."""

    job: Job | None = None
    created: bool = False
    error: ServiceError | None = None


def create(principal: Principal, data: DispatchInput) -> tuple[Job, bool]:
    """Accept one job; return it and whether it was created (False: an idempotent repeat).

    A job is created QUEUED; one due now is pulled by a delivery worker (which releases it
    under the project's flow control and sends it at once, ``jobs.pull``), a later one is
    registered with the scheduler.

    Raises:
        LimitReached: the team's monthly quota is used up.
    """
    (outcome,) = accept(principal, [data])
    if outcome.error is not None:
        raise outcome.error
    assert outcome.job is not None
    return outcome.job, outcome.created


def create_many(
    principal: Principal, items: Sequence[DispatchInput | ServiceError]
) -> list[Outcome]:
    """Accept a batch: ``items`` are validated dispatch inputs, or the error that made an item
    invalid (passed through as its outcome). Outcomes come back in the order of ``items``."""
    valid = [item for item in items if isinstance(item, DispatchInput)]
    accepted = iter(accept(principal, valid))
    return [
        next(accepted) if isinstance(item, DispatchInput) else Outcome(error=item) for item in items
    ]


def accept(principal: Principal, inputs: Sequence[DispatchInput]) -> list[Outcome]:
    """Create the jobs of ``inputs`` in order until the quota is spent; an input whose
    idempotency key was seen (before, or earlier in ``inputs``) gets the original job."""
    if not inputs:
        return []
    plan = plans.get(principal.plan)
    now = clock.utcnow()
    for _ in range(IDEMPOTENCY_RETRIES):
        try:
            with _writer() as conn:
                existing = _find_idempotent(conn, principal.project_id, inputs, now)
                rows, refs = _plan(principal.project_id, inputs, existing, now)
                granted = _insert(conn, principal.team_id, plan.monthly_quota, rows, now)
            break
        except IntegrityError as exc:
            if "idem" not in str(exc.orig or exc):
                raise
            logger.info("idempotency key taken by a concurrent request; looking the keys up again")
    else:
        raise RuntimeError(f"idempotency keys kept racing after {IDEMPOTENCY_RETRIES} tries")
    created = rows[:granted]
    if created:
        _hand_over(principal.project_id, created, now)
    refused = usage.limit_reached(plan, now) if granted < len(rows) else None
    new_jobs = [Job(**row) for row in created]
    outcomes: list[Outcome] = []
    for ref in refs:
        if isinstance(ref, Job):
            outcomes.append(Outcome(job=ref))
        elif ref[0] >= granted:
            outcomes.append(Outcome(error=refused))
        else:
            outcomes.append(Outcome(job=new_jobs[ref[0]], created=ref[1]))
    return outcomes


@contextmanager
def _writer() -> Iterator[sa.Connection]:
    """PostgreSQL: an autocommit connection (each statement commits itself). SQLite: one
    transaction (its database lock serializes writers; there is no round trip to save)."""
    if db.engine.dialect.name == "postgresql":
        with autocommit() as conn:
            yield conn
    else:
        with db.engine.begin() as conn:
            yield conn


def _find_idempotent(
    conn: sa.Connection, project_id: int, inputs: Sequence[DispatchInput], now: datetime
) -> dict[str, Job]:
    """The live jobs of the inputs' idempotency keys; expired keys are freed for new jobs."""
    wanted = {data.idempotency_key for data in inputs if data.idempotency_key}
    if not wanted:
        return {}
    rows = conn.execute(
        sa.select(jobs_table).where(
            jobs_table.c.project_id == project_id, jobs_table.c.idempotency_key.in_(wanted)
        )
    ).all()
    ttl = timedelta(hours=current_app.config["IDEMPOTENCY_TTL_HOURS"])
    live = {row.idempotency_key: Job(**row._mapping) for row in rows if now - row.created_at < ttl}
    expired = [row.id for row in rows if row.idempotency_key not in live]
    if expired:
        # The key expired: free it for the new job (the old job keeps everything else).
        conn.execute(
            sa.update(jobs_table).where(jobs_table.c.id.in_(expired)).values(idempotency_key=None)
        )
    return live


#: An item's job: the original (a Job), or (index in the new rows, created by this item).
Ref = Job | tuple[int, bool]


def _plan(
    project_id: int, inputs: Sequence[DispatchInput], existing: dict[str, Job], now: datetime
) -> tuple[list[dict[str, Any]], list[Ref]]:
    """The rows to insert (in order) and, per input, where its job comes from."""
    rows: list[dict[str, Any]] = []
    refs: list[Ref] = []
    first: dict[str, int] = {}
    for data in inputs:
        key = data.idempotency_key
        if key is not None and key in existing:
            refs.append(existing[key])
        elif key is not None and key in first:
            refs.append((first[key], False))  # a repeat within the batch
        else:
            if key is not None:
                first[key] = len(rows)
            refs.append((len(rows), True))
            rows.append(_row(project_id, data, now))
    return rows, refs


def _row(project_id: int, data: DispatchInput, now: datetime) -> dict[str, Any]:
    """The ``jobs`` row of a new job: QUEUED, its first attempt due at its scheduled time."""
    return {
        "id": new_id("job"),
        "project_id": project_id,
        "status": S.QUEUED,
        "payload": data.payload,
        "scheduled_for": data.schedule_for,
        "next_attempt_at": data.schedule_for,
        "max_retries": data.max_retries,
        "attempts": 0,
        "retry_base": 0,
        "idempotency_key": data.idempotency_key,
        "callback_url": data.callback,
        "failure_callback_url": data.failure_callback,
        "needs_handoff": False,
        "created_at": now,
        "updated_at": now,
    }


def _insert(
    conn: sa.Connection, team_id: int, quota: int | None, rows: list[dict[str, Any]], now: datetime
) -> int:
    """Insert the first of ``rows`` that fit in the quota; return how many were inserted."""
    month = clock.month_key(now)
    want = len(rows)
    ensured = False
    for _ in range(QUOTA_ROUNDS):
        if want == 0 or _insert_counted(conn, team_id, month, quota, rows[:want]):
            return want
        count = usage.used(conn, team_id, month)
        if count is None:
            if ensured:
                break
            usage.ensure_row(conn, team_id, month)
            ensured = True
        elif quota is not None:
            want = min(want, max(0, quota - count))
    raise RuntimeError(f"could not count {want} jobs of team {team_id} in {month}")


def _insert_counted(
    conn: sa.Connection, team_id: int, month: str, quota: int | None, rows: list[dict[str, Any]]
) -> bool:
    """Count ``rows`` against the quota and insert them, all or none; return whether it did."""
    if conn.dialect.name != "postgresql":
        if conn.execute(usage.grant_statement(team_id, month, quota, len(rows))).first() is None:
            return False
        conn.execute(sa.insert(jobs_table), rows)
        return True
    columns = tuple(rows[0])
    sql = _counted_insert_sql(columns, len(rows), quota is not None)
    process = _bind_processors(conn.dialect, columns)
    params: list[Any] = [len(rows), team_id, month]
    if quota is not None:
        params += [len(rows), quota]
    pairs = list(zip(columns, process, strict=True))
    for row in rows:
        params += [row[c] if f is None else f(row[c]) for c, f in pairs]
    result = conn.exec_driver_sql(sql, tuple(params), {"preserve_rowcount": True})
    return result.rowcount == len(rows)


@functools.cache
def _counted_insert_sql(columns: tuple[str, ...], n: int, limited: bool) -> str:
    """The one-statement quota count + multi-row INSERT of ``n`` rows (PostgreSQL), as driver
    SQL: built once per shape, so a dispatch spends no time compiling 13 x n bind parameters."""
    from sqlalchemy.dialects import postgresql

    dialect = postgresql.dialect()
    # Without a length: a cast to VARCHAR(n) would truncate silently, the column refuses.
    casts = [
        re.sub(r"\(\d+\)", "", jobs_table.c[name].type.compile(dialect=dialect)) for name in columns
    ]
    row = "(" + ", ".join(f"%s::{cast}" for cast in casts) + ")"
    names = ", ".join(columns)
    table = usage.TABLE_NAME
    fits = " AND jobs + %s <= %s" if limited else ""
    return (
        f"WITH counted AS (UPDATE {table} SET jobs = jobs + %s"
        f" WHERE team_id = %s AND month = %s{fits} RETURNING jobs)"
        f" INSERT INTO {jobs_table.name} ({names})"
        f" SELECT {names} FROM (VALUES {', '.join([row] * n)}) AS v ({names})"
        " WHERE EXISTS (SELECT FROM counted)"
    )


_processors: dict[tuple[str, tuple[str, ...]], list[Any]] = {}


def _bind_processors(dialect: sa.Dialect, columns: tuple[str, ...]) -> list[Any]:
    """The columns' bind processors (UTC datetimes, JSON), as SQLAlchemy would apply them."""
    key = (dialect.name, columns)
    if key not in _processors:
        _processors[key] = [jobs_table.c[c].type.bind_processor(dialect) for c in columns]
    return _processors[key]


def _hand_over(project_id: int, rows: list[dict[str, Any]], now: datetime) -> None:
    """Give the new jobs to the transport in one round trip; flag them if Redis is down."""
    timed = [((r["id"], 1), r["next_attempt_at"]) for r in rows if r["next_attempt_at"] > now]
    due_now = len(timed) < len(rows)
    try:
        transport.admit(
            [project_id] if due_now else [], timed, metrics.job_counter("dispatched", len(rows))
        )
    except transport.TransportUnavailable as exc:
        logger.warning(
            "%d new jobs of project %s stay QUEUED in the DB, Redis unreachable: %s "
            "(the reconciler will hand them over)",
            len(rows),
            project_id,
            exc,
        )
        with autocommit() as conn:
            conn.execute(
                sa.update(jobs_table)
                .where(jobs_table.c.id.in_([row["id"] for row in rows]))
                .values(needs_handoff=True)
            )


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
