"""The job state machine (DESIGN.md §4): the table of allowed transitions and the one
compare-and-set through which every status write goes.

Each write is ``UPDATE jobs SET status = :to, … WHERE id = :id AND status IN (:from…)
[AND attempts = :n]``, so two racing actors (two cancels, a cancel and the scheduler, a worker
and the reconciler) have exactly one winner; the loser sees rowcount 0. A transition that is
not in ``TRANSITIONS`` raises ``InvalidTransition`` before anything is written.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from ..clock import utcnow
from ..extensions import db
from ..models import Job, JobStatus

S = JobStatus
jobs_table = Job.__table__

#: Every allowed (from, to) status change and why it happens. Creation is not a transition:
#: a job is inserted QUEUED (or DISPATCHED when due now, its time having come).
TRANSITIONS: dict[tuple[str, str], str] = {
    (S.QUEUED, S.DISPATCHED): "its time came: released to the transport",
    (S.QUEUED, S.QUEUED): "rescheduled: the pending attempt moves to another time",
    (S.QUEUED, S.CANCELLED): "cancelled by the user",
    (S.DISPATCHED, S.STARTED): "a worker took the attempt: the HTTP request is in flight",
    (S.DISPATCHED, S.QUEUED): "the attempt reached a worker before its time: handed back",
    (S.STARTED, S.COMPLETED): "the endpoint answered 2xx",
    (S.STARTED, S.QUEUED): "the attempt failed and retries are left",
    (S.STARTED, S.FAILED): "the attempt failed with no retry left, or 410 Gone",
    (S.FAILED, S.QUEUED): "replayed by the user with a fresh retry budget",
}
INITIAL = (S.QUEUED, S.DISPATCHED)


class InvalidTransition(RuntimeError):
    """A status write that the state machine does not allow (a bug, never user input)."""


def check(from_statuses: Iterable[str], to_status: str) -> list[str]:
    """Return ``from_statuses`` as a list, or raise InvalidTransition naming the bad pair."""
    sources = list(from_statuses)
    for source in sources:
        if (source, to_status) not in TRANSITIONS:
            raise InvalidTransition(f"job status {source} → {to_status} is not a transition")
    if not sources:
        raise InvalidTransition(f"no source status given for → {to_status}")
    return sources


def statement(
    from_statuses: Iterable[str],
    to_status: str,
    *,
    at_attempts: int | None = None,
    guard: dict[str, Any] | None = None,
    **values: Any,
) -> sa.Update:
    """Build the guarded UPDATE of one transition (callers add the job id condition).

    ``guard`` adds ``column = value`` conditions (``None`` = IS NULL), e.g. the holder.
    """
    sources = check(from_statuses, to_status)
    stmt = sa.update(jobs_table).where(jobs_table.c.status.in_(sources))
    if at_attempts is not None:
        stmt = stmt.where(jobs_table.c.attempts == at_attempts)
    for name, value in (guard or {}).items():
        column = jobs_table.c[name]
        stmt = stmt.where(column.is_(None) if value is None else column == value)
    values.setdefault("updated_at", utcnow())
    return stmt.values(status=to_status, **values)


def move(
    job_id: str,
    from_statuses: Iterable[str],
    to_status: str,
    *,
    at_attempts: int | None = None,
    guard: dict[str, Any] | None = None,
    commit: bool = True,
    **values: Any,
) -> bool:
    """Move one job from one of ``from_statuses`` (with ``at_attempts`` attempts made, if given)
    to ``to_status``, writing ``values`` too.

    Returns whether this call won. With ``commit=False`` the caller owns the transaction (it
    records more in it and commits or rolls back); otherwise it is committed here.
    """
    stmt = statement(from_statuses, to_status, at_attempts=at_attempts, guard=guard, **values)
    try:
        changed = db.session.execute(stmt.where(jobs_table.c.id == job_id)).rowcount
        if commit:
            db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    return changed == 1


def move_many(
    refs: Sequence[tuple[str, int]],
    from_status: str,
    to_status: str,
    *,
    guard: dict[str, Any] | None = None,
    increment: Sequence[str] = (),
    **values: Any,
) -> set[str]:
    """Move every job of ``refs`` (``(job_id, attempts made)`` pairs) that is still in
    ``from_status`` at that count; return the ids that moved. The caller commits.

    ``values`` are plain values (bound as parameters); ``increment`` names columns to add 1
    to (the one SQL expression a move needs). The delivery engine runs this for every batch, so
    the UPDATE is built once per shape (from, to, guard and value names) with bind parameters:
    its construction and cache key cost more CPU than its execution (bench/README, sixth look).
    """
    values.setdefault("updated_at", utcnow())
    guard = guard or {}
    stmt = _many_statement(
        from_status,
        to_status,
        tuple(sorted((name, value is None) for name, value in guard.items())),
        tuple(sorted(values)),
        tuple(sorted(increment)),
    )
    params = {f"v_{name}": value for name, value in values.items()}
    params.update({f"g_{name}": value for name, value in guard.items() if value is not None})
    params["m_from"] = from_status
    params["m_to"] = to_status
    moved: set[str] = set()
    for start in range(0, len(refs), 500):
        params["m_refs"] = list(refs[start : start + 500])
        moved.update(db.session.execute(stmt, params).scalars())
    return moved


@functools.lru_cache(maxsize=32)
def _many_statement(
    from_status: str,
    to_status: str,
    guard: tuple[tuple[str, bool], ...],
    names: tuple[str, ...],
    increment: tuple[str, ...],
) -> sa.Update:
    """The ``move_many`` UPDATE of one shape: ``guard`` is (column, is None) pairs, ``names``
    the columns written from parameters ``v_<name>``, ``increment`` the columns that add 1."""
    check([from_status], to_status)
    job = jobs_table.c
    stmt = sa.update(jobs_table).where(
        job.status == sa.bindparam("m_from"),
        sa.tuple_(job.id, job.attempts).in_(sa.bindparam("m_refs", expanding=True)),
    )
    for name, is_none in guard:
        column = job[name]
        stmt = stmt.where(column.is_(None) if is_none else column == sa.bindparam(f"g_{name}"))
    written: dict[str, Any] = {name: sa.bindparam(f"v_{name}") for name in names}
    written.update({name: job[name] + 1 for name in increment})
    return stmt.values(status=sa.bindparam("m_to"), **written).returning(job.id)


def set_fields(job_id: str, **values: Any) -> None:
    """Write bookkeeping fields that are not a status (hand-off flag, idempotency key); commit."""
    if "status" in values:
        raise InvalidTransition("status changes go through move(), not set_fields()")
    try:
        db.session.execute(sa.update(jobs_table).where(jobs_table.c.id == job_id).values(**values))
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
