"""JSON shapes of the API's resources."""

from __future__ import annotations

from typing import Any

from ..clock import isoformat
from ..flow_settings import EndpointState, FlowStatus
from ..jobs import Outcome
from ..models import Attempt, Job, JobStatus, Project


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


def outcome(outcome: Outcome) -> dict[str, Any]:
    """One result of ``POST /api/jobs/dispatch/batch``: the job as ``dispatched`` shows it, with
    ``deduplicated`` (an idempotent repeat), or the error that refused the item."""
    if outcome.error is not None:
        error = outcome.error
        return {"error": error.code, "data": {"message": error.message, **error.data}}
    assert outcome.job is not None
    return {**dispatched(outcome.job, outcome.created), "deduplicated": not outcome.created}


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


def project(project: Project, flow: FlowStatus, endpoint: EndpointState) -> dict[str, Any]:
    """``GET /api/project``: the settings a key may read, and what is in force now."""
    return {
        "projectId": project.id,
        "name": project.name,
        "webhookUrl": project.webhook_url,
        "flowControl": {
            "parallelism": flow.parallelism,
            "ratePerSecond": flow.rate,
            "effectiveParallelism": flow.effective,
        },
        "endpoint": endpoint.to_dict(),
    }
