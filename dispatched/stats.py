"""Read-only figures for the dashboard: jobs per day by status, latest failures, lateness."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import sqlalchemy as sa

from . import clock
from .extensions import db
from .models import Attempt, Job, JobStatus

CHART_STATUSES = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, "LIVE")
#: Lateness percentiles are computed over at most this many of the most recent attempts.
LATENESS_SAMPLE = 20_000


@dataclass
class Day:
    day: date
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def jobs_per_day(project_id: int, days: int = 30) -> list[Day]:
    """Jobs created per UTC day for the last ``days`` days, by status (live ones together)."""
    today = clock.utcnow().date()
    start = today - timedelta(days=days - 1)
    since = clock.utcnow().replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
        days=days - 1
    )
    dialect = db.session.get_bind().dialect.name
    day_expr = (
        sa.func.date_trunc("day", sa.func.timezone("UTC", Job.created_at))
        if dialect == "postgresql"
        else sa.func.date(Job.created_at)
    )
    rows = db.session.execute(
        sa.select(day_expr.label("day"), Job.status, sa.func.count())
        .where(Job.project_id == project_id, Job.created_at >= since)
        .group_by("day", Job.status)
    ).all()
    table = {start + timedelta(days=i): dict.fromkeys(CHART_STATUSES, 0) for i in range(days)}
    for day, status, count in rows:
        key = day.date() if hasattr(day, "date") else date.fromisoformat(str(day))
        bucket = status if status in CHART_STATUSES else "LIVE"
        if key in table:
            table[key][bucket] += count
    return [Day(day, counts) for day, counts in table.items()]


def recent_failures(project_id: int, limit: int = 5) -> list[Job]:
    return list(
        db.session.execute(
            sa.select(Job)
            .where(Job.project_id == project_id, Job.status == JobStatus.FAILED)
            .order_by(Job.updated_at.desc())
            .limit(limit)
        ).scalars()
    )


def status_counts(project_id: int) -> dict[str, int]:
    rows = db.session.execute(
        sa.select(Job.status, sa.func.count())
        .where(Job.project_id == project_id)
        .group_by(Job.status)
    ).all()
    return {status: count for status, count in rows}


@dataclass(frozen=True)
class Lateness:
    """Lateness (due time → attempt start) of a project's recent attempts, in milliseconds."""

    p50_ms: int
    p99_ms: int
    #: Attempts measured (at most LATENESS_SAMPLE, the most recent).
    count: int

    @property
    def sampled(self) -> bool:
        """More attempts started than were measured."""
        return self.count >= LATENESS_SAMPLE


def percentile(ordered: list[int], pct: float) -> int:
    """Nearest-rank percentile of an ascending, non-empty list."""
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def lateness(project_id: int, since: datetime | None = None) -> Lateness | None:
    """p50/p99 lateness of the project's attempts started since ``since`` (default: the last
    hour), over the LATENESS_SAMPLE most recent; None when there were none."""
    since = since or clock.utcnow() - timedelta(hours=1)
    values = sorted(
        db.session.execute(
            sa.select(Attempt.lateness_ms)
            .join(Job, Job.id == Attempt.job_id)
            .where(
                Job.project_id == project_id,
                Attempt.started_at >= since,
                Attempt.lateness_ms.is_not(None),
            )
            .order_by(Attempt.started_at.desc())
            .limit(LATENESS_SAMPLE)
        ).scalars()
    )
    if not values:
        return None
    return Lateness(percentile(values, 50), percentile(values, 99), len(values))
