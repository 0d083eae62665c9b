"""JSON shapes of the API's resources."""

from __future__ import annotations

from typing import Any

from .. import cron
from ..clock import isoformat
from ..flow_settings import EndpointState, FlowStatus
from ..jobs import Outcome
from ..models import Attempt, Job, JobStatus, Project, Schedule, ScheduleFire


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
        "scheduleId": job.schedule_id,
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


def _local(value: Any) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None


def schedule(schedule: Schedule) -> dict[str, Any]:
    nxt = schedule.next_fire_at
    return {
        "scheduleId": schedule.id,
        "name": schedule.name,
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "payload": schedule.payload,
        "maxRetries": schedule.max_retries,
        "catchUp": schedule.catch_up,
        "paused": schedule.paused,
        "nextFireAt": isoformat(nxt),
        "nextFireAtLocal": _local(nxt.astimezone(cron.zone(schedule.timezone)) if nxt else None),
        "nextFireDst": schedule.next_fire_dst,
        "lastFireAt": isoformat(schedule.last_fire_at),
        "createdAt": isoformat(schedule.created_at),
        "updatedAt": isoformat(schedule.updated_at),
    }


def fire_time(fire: cron.Fire) -> dict[str, Any]:
    return {"at": isoformat(fire.at), "local": _local(fire.local), "dst": fire.dst}


def schedule_fire(fire: ScheduleFire) -> dict[str, Any]:
    return {
        "fireAt": isoformat(fire.fire_at),
        "outcome": fire.outcome,
        "jobId": fire.job_id,
        "reason": fire.reason,
        "dst": fire.dst,
        "recordedAt": isoformat(fire.recorded_at),
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
