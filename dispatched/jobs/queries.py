"""Reading jobs: one job of a project, pages of them (keyset cursors), their attempt log."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime

import sqlalchemy as sa

from ..errors import BadRequest, NotFound
from ..extensions import db
from ..models import Attempt, Job


def get(project_id: int, job_id: str) -> Job:
    """Return a job of the project, or raise NotFound (also for another project's job)."""
    job = db.session.get(Job, job_id) if looks_like_job_id(job_id) else None
    if job is None or job.project_id != project_id:
        raise NotFound(f"Job {job_id!r} not found", jobId=job_id)
    return job


def looks_like_job_id(job_id: str) -> bool:
    return (
        job_id.startswith("job_")
        and len(job_id) <= 40
        and job_id[4:].isalnum()
        and job_id.isascii()
    )


def list_jobs(
    project_id: int,
    status: str | None,
    limit: int,
    cursor: str | None,
    search: str | None = None,
    schedule_id: str | None = None,
) -> tuple[list[Job], str | None]:
    """Return a page of the project's jobs, newest first, and the cursor of the next page.

    ``search`` matches the start of a job id (``job_3fZ`` finds ``job_3fZ…``); ``schedule_id``
    keeps the jobs that schedule created.
    """
    query = sa.select(Job).where(Job.project_id == project_id)
    if schedule_id:
        query = query.where(Job.schedule_id == schedule_id)
    if status:
        query = query.where(Job.status == status)
    if search:
        query = query.where(Job.id.startswith(search[:40], autoescape=True))
    if cursor:
        created_at, last_id = decode_cursor(cursor)
        query = query.where(
            sa.or_(
                Job.created_at < created_at, sa.and_(Job.created_at == created_at, Job.id < last_id)
            )
        )
    query = query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)
    rows = list(db.session.execute(query).scalars())
    next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor


def encode_cursor(job: Job) -> str:
    raw = f"{job.created_at.timestamp():.6f}|{job.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Return the (created_at, id) position a cursor points after, or raise BadRequest."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, job_id = raw.split("|", 1)
        created_at = datetime.fromtimestamp(float(stamp), tz=UTC)
    except (ValueError, binascii.Error, UnicodeError, OverflowError, OSError):
        raise BadRequest(f"cursor {cursor[:80]!r} is not a cursor from this API") from None
    if not looks_like_job_id(job_id):
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


def reload(job: Job) -> Job:
    """Return ``job`` with its columns read again from the database."""
    db.session.refresh(job)
    return job
