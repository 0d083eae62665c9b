"""Retention: deleting old finished jobs and their attempt logs
(``flask --app wsgi admin purge --older-than DAYS``).

Only terminal jobs go (``COMPLETED``, ``FAILED``, ``CANCELLED``) whose last transition is older
than the cutoff (``updated_at``: a terminal job changes no more, except a replay that makes a
``FAILED`` job ``QUEUED`` again), with their attempts. Live jobs, teams, keys and the monthly
usage counters are never touched, so quotas stay right.

The work is done in batches, one short transaction each, so a purge of millions of rows never
holds long locks or a huge transaction: each batch picks the oldest ids (row-locked with ``FOR
UPDATE SKIP LOCKED`` on PostgreSQL), then deletes their attempts and the jobs with the
conditions checked again, so a job replayed meanwhile keeps its attempt log.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from . import clock
from .errors import BadRequest
from .extensions import db
from .models import Attempt, Job, JobStatus

logger = logging.getLogger(__name__)

#: Jobs deleted per transaction.
BATCH = 1000
#: Most jobs one batch may delete: a bigger batch holds its locks too long.
MAX_BATCH = 50_000


@dataclass(frozen=True)
class Purged:
    """What a purge did (or, with ``dry_run``, would do)."""

    cutoff: datetime
    jobs: int
    attempts: int
    batches: int
    dry_run: bool = False

    def to_dict(self) -> dict[str, object]:
        return {
            "cutoff": clock.isoformat(self.cutoff),
            "jobs": self.jobs,
            "attempts": self.attempts,
            "batches": self.batches,
            "dryRun": self.dry_run,
        }


def parse_days(value: str) -> float:
    """Parse ``--older-than`` (days, at least 1; fractions allowed)."""
    try:
        days = float(value)
    except ValueError:
        raise BadRequest(f"--older-than must be a number of days, got {value!r}") from None
    if not days >= 1 or days == float("inf"):
        raise BadRequest(f"--older-than must be at least 1 day, got {value!r}")
    return days


def _old(cutoff: datetime) -> list[sa.ColumnElement[bool]]:
    return [Job.status.in_(JobStatus.TERMINAL), Job.updated_at < cutoff]


def count(cutoff: datetime) -> tuple[int, int]:
    """Return how many jobs and attempts a purge at ``cutoff`` would delete now."""
    jobs = db.session.scalar(sa.select(sa.func.count()).select_from(Job).where(*_old(cutoff)))
    attempts = db.session.scalar(
        sa.select(sa.func.count())
        .select_from(Attempt)
        .join(Job, Job.id == Attempt.job_id)
        .where(*_old(cutoff))
    )
    db.session.rollback()
    return jobs or 0, attempts or 0


def purge(
    older_than_days: float,
    *,
    batch_size: int = BATCH,
    dry_run: bool = False,
    pause: float = 0.0,
) -> Purged:
    """Delete terminal jobs finished more than ``older_than_days`` ago, and their attempts.

    ``pause`` seconds are slept between batches to leave the database room for live traffic.
    """
    if not 1 <= batch_size <= MAX_BATCH:
        raise BadRequest(f"batch size must be between 1 and {MAX_BATCH}, got {batch_size}")
    cutoff = clock.utcnow() - timedelta(days=older_than_days)
    if dry_run:
        jobs, attempts = count(cutoff)
        return Purged(cutoff, jobs, attempts, 0, dry_run=True)
    jobs = attempts = batches = 0
    while True:
        done_jobs, done_attempts = _purge_batch(cutoff, batch_size)
        if not done_jobs:
            break
        jobs, attempts, batches = jobs + done_jobs, attempts + done_attempts, batches + 1
        logger.info("purge: %d jobs, %d attempts deleted so far", jobs, attempts)
        if pause:
            time.sleep(pause)
    logger.info(
        "purge: deleted %d jobs and %d attempts finished before %s in %d batches",
        jobs,
        attempts,
        clock.isoformat(cutoff),
        batches,
    )
    return Purged(cutoff, jobs, attempts, batches)


def _purge_batch(cutoff: datetime, size: int) -> tuple[int, int]:
    """Delete one batch in one transaction; return (jobs, attempts) deleted."""
    pick = sa.select(Job.id).where(*_old(cutoff)).order_by(Job.updated_at, Job.id).limit(size)
    if db.engine.dialect.name == "postgresql":
        # Another purge running at the same time takes other rows; a replay waits for us.
        pick = pick.with_for_update(skip_locked=True)
    try:
        ids = list(db.session.execute(pick).scalars())
        if not ids:
            db.session.rollback()
            return 0, 0
        # The conditions again: on SQLite the first DELETE takes the write lock, and from then
        # on nobody can replay one of these jobs before we commit.
        still_old = sa.select(Job.id).where(Job.id.in_(ids), *_old(cutoff))
        attempts = db.session.execute(
            sa.delete(Attempt).where(Attempt.job_id.in_(still_old))
        ).rowcount
        jobs = db.session.execute(sa.delete(Job).where(Job.id.in_(ids), *_old(cutoff))).rowcount
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    return jobs, attempts
