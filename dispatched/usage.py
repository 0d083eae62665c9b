"""Monthly job quota: one counter row per team and UTC month, incremented with a CAS.

The increment ``UPDATE … SET jobs = jobs + :n WHERE … AND jobs + :n <= :quota`` is atomic on
both PostgreSQL (row lock) and SQLite (database write lock), so concurrent dispatches can never
overshoot the quota. It runs in the statement or transaction that creates the jobs: if their
insert fails, the increment rolls back with it. The ingest path (``jobs.intake``) runs it as a
CTE of the job INSERT, one autocommit statement, so the row is locked only while the server runs
that statement (no lock convoy behind a client round trip); replays use ``consume`` inside the
session's transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from . import clock
from .errors import LimitReached
from .extensions import db
from .models import MonthlyUsage
from .plans import Plan

_table = MonthlyUsage.__table__
#: The counter table's name (``jobs.intake`` writes its own SQL for it, see ``grant_statement``).
TABLE_NAME = _table.name


def grant_statement(team_id: int, month: str, quota: int | None, n: int) -> sa.Update:
    """``UPDATE`` that counts ``n`` jobs if they all fit in ``quota`` (None = unlimited) and
    returns the new count; it matches no row when they do not fit or the row is missing."""
    stmt = (
        sa.update(_table)
        .where(_table.c.team_id == team_id, _table.c.month == month)
        .values(jobs=_table.c.jobs + n)
    )
    if quota is not None:
        stmt = stmt.where(_table.c.jobs + n <= quota)
    return stmt.returning(_table.c.jobs)


def used(conn: sa.Connection, team_id: int, month: str) -> int | None:
    """Jobs counted in ``month`` (None: no row yet), read on ``conn``."""
    return conn.execute(
        sa.select(_table.c.jobs).where(_table.c.team_id == team_id, _table.c.month == month)
    ).scalar()


def ensure_row(conn: sa.Connection | Any, team_id: int, month: str) -> None:
    """Create the team's counter row for ``month`` unless it exists (on ``conn``: a connection
    or the session)."""
    insert = pg_insert if db.engine.dialect.name == "postgresql" else sqlite_insert
    stmt = insert(_table).values(team_id=team_id, month=month, jobs=0).on_conflict_do_nothing()
    conn.execute(stmt)


def _increment(team_id: int, month: str, quota: int | None) -> bool:
    return db.session.execute(grant_statement(team_id, month, quota, 1)).first() is not None


def consume(team_id: int, plan: Plan, now: datetime | None = None) -> None:
    """Count one job against the team's quota for this month, in the current transaction.

    Raises:
        LimitReached: the team already created ``plan.monthly_quota`` jobs this month.
    """
    now = now or clock.utcnow()
    month = clock.month_key(now)
    if _increment(team_id, month, plan.monthly_quota):
        return
    ensure_row(db.session, team_id, month)
    if _increment(team_id, month, plan.monthly_quota):
        return
    raise limit_reached(plan, now)


def limit_reached(plan: Plan, now: datetime) -> LimitReached:
    """The LIMIT_REACHED error of a spent quota (with Retry-After until the next month)."""
    error = LimitReached(
        f"Monthly job limit reached: {plan.monthly_quota} jobs on plan {plan.name!r}",
        limit=plan.monthly_quota,
        plan=plan.name,
        resetsAt=clock.isoformat(clock.next_month_start(now)),
    )
    error.headers["Retry-After"] = str(clock.seconds_until(clock.next_month_start(now), now))
    return error


def consume_up_to(team_id: int, plan: Plan, count: int, now: datetime | None = None) -> int:
    """Count up to ``count`` jobs against the team's quota for this month, as many as it has
    room for, in the current transaction; return how many were counted (schedule fires)."""
    if count <= 0:
        return 0
    month = clock.month_key(now or clock.utcnow())
    quota = plan.monthly_quota
    room = sa.and_(_table.c.team_id == team_id, _table.c.month == month)
    # The common case in one statement: the whole count fits (or the plan is unlimited).
    stmt = sa.update(_table).where(room).values(jobs=_table.c.jobs + count)
    if quota is not None:
        stmt = stmt.where(_table.c.jobs + count <= quota)
    if db.session.execute(stmt).rowcount == 1:
        return count
    ensure_row(db.session, team_id, month)
    # The row lock (PostgreSQL; SQLite holds its write lock since the insert) makes the
    # read-then-write below safe against concurrent dispatches of the team.
    used = db.session.execute(sa.select(_table.c.jobs).where(room).with_for_update()).scalar_one()
    allowed = count if quota is None else max(0, min(count, quota - used))
    if allowed:
        db.session.execute(sa.update(_table).where(room).values(jobs=_table.c.jobs + allowed))
    return allowed


def jobs_this_month(team_id: int, now: datetime | None = None) -> int:
    """Return how many jobs the team created this UTC month (cancelled ones included)."""
    month = clock.month_key(now or clock.utcnow())
    row = db.session.get(MonthlyUsage, (team_id, month))
    return row.jobs if row else 0


def summary(team_id: int, plan: Plan, now: datetime | None = None) -> dict[str, object]:
    """Return the ``GET /api/usage`` view of a team's month."""
    now = now or clock.utcnow()
    reset = clock.next_month_start(now)
    return {
        "plan": plan.name,
        "jobsThisMonth": jobs_this_month(team_id, now),
        "limit": plan.monthly_quota,
        "daysUntilReset": (reset.date() - now.date()).days,
        "resetsAt": clock.isoformat(reset),
        "rateLimit": {"requestsPerMinute": plan.rate_per_minute},
    }
