"""JSON shapes of the API's resources."""

from __future__ import annotations

from typing import Any

from ..clock import isoformat
from ..models import Attempt, Job, JobStatus


def dispatched(job: Job, created: bool) -> dict[str, Any]:
    """The answer to ``POST /api/jobs/dispatch``: a new job is reported as accepted, "QUEUED"
    (DESIGN.md §5); an idempotent repeat shows the original job's current status."""
    return {
        "jobId": job.id,
        "status": JobStatus.QUEUED if created else job.status,
        "scheduledFor": isoformat(job.scheduled_for),
        "maxRetries": job.max_retries,
        "createdAt": isoformat(job.created_at),
    }


def job(job: Job) -> dict[str, Any]:
    return {
        "jobId": job.id,
        "status": job.status,
        "payload": job.payload,
        "scheduledFor": isoformat(job.scheduled_for),
        "createdAt": isoformat(job.created_at),
        "updatedAt": isoformat(job.updated_at),
        "maxRetries": job.max_retries,
        "attempts": job.attempts,
        "nextAttemptAt": isoformat(job.next_attempt_at),
        "completedAt": isoformat(job.completed_at),
        "cancelledAt": isoformat(job.cancelled_at),
        "lastError": job.last_error,
        "callback": job.callback_url,
        "failureCallback": job.failure_callback_url,
        "callbackStatus": job.callback_status,
    }


def attempt(attempt: Attempt) -> dict[str, Any]:
    return {
        "attemptId": attempt.id,
        "attemptNumber": attempt.number,
        "startedAt": isoformat(attempt.started_at),
        "finishedAt": isoformat(attempt.finished_at),
        "durationMs": attempt.duration_ms,
        "httpStatus": attempt.http_status,
        "outcome": attempt.outcome,
        "error": attempt.error,
        "responseExcerpt": attempt.response_excerpt,
    }
