"""Reading jobs: one job of a project, pages of them (keyset cursors), their attempt log."""

from __future__ import annotations

import sqlalchemy as sa

from .. import paging
from ..errors import NotFound
from ..extensions import db
from ..ids import looks_like
from ..models import Attempt, Job


def get(project_id: int, job_id: str) -> Job:
    """Return a job of the project, or raise NotFound (also for another project's job)."""
    job = db.session.get(Job, job_id) if looks_like_job_id(job_id) else None
    if job is None or job.project_id != project_id:
        raise NotFound(f"Job {job_id!r} not found", jobId=job_id)
    return job


def looks_like_job_id(job_id: str) -> bool:
    return looks_like(job_id, "job")


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
    return paging.newest_first(query, Job, cursor, limit, looks_like_job_id)


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
