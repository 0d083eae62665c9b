"""Typed results of the API (DESIGN.md §5, §13). Times are timezone-aware ``datetime``s (UTC).

Every result keeps the JSON it was built from in ``raw``, so fields a newer server adds are
readable before this SDK names them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any


def parse_time(value: Any) -> datetime | None:
    """An API timestamp (ISO-8601, ``Z`` or an offset) as an aware datetime; None stays None."""
    if value is None or value == "":
        return None
    text = str(value)
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    when = datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def format_time(value: datetime | timedelta | str | None) -> str | None:
    """A time for the API: a datetime (naive = UTC), a delay from now, an ISO string, or None."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, timedelta):
        value = datetime.now(timezone.utc) + value
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, timedelta or ISO string, got {value!r}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    text = value.astimezone(timezone.utc).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


@dataclass(frozen=True)
class DispatchResult:
    """The answer to a dispatch: ``created`` is False for an idempotent repeat (the original)."""

    job_id: str
    status: str
    scheduled_for: datetime | None
    max_retries: int | None
    created_at: datetime | None
    created: bool = True
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any], created: bool = True) -> DispatchResult:
        return cls(
            job_id=data["jobId"],
            status=data.get("status", "QUEUED"),
            scheduled_for=parse_time(data.get("scheduledFor")),
            max_retries=data.get("maxRetries"),
            created_at=parse_time(data.get("createdAt")),
            created=created,
            raw=data,
        )


@dataclass(frozen=True)
class Job:
    job_id: str
    status: str
    payload: Any
    scheduled_for: datetime | None
    created_at: datetime | None
    updated_at: datetime | None
    max_retries: int | None
    attempts: int
    next_attempt_at: datetime | None
    completed_at: datetime | None
    cancelled_at: datetime | None
    last_error: str | None
    schedule_id: str | None = None
    callback: str | None = None
    failure_callback: str | None = None
    callback_status: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        return cls(
            job_id=data["jobId"],
            status=data["status"],
            payload=data.get("payload"),
            scheduled_for=parse_time(data.get("scheduledFor")),
            created_at=parse_time(data.get("createdAt")),
            updated_at=parse_time(data.get("updatedAt")),
            max_retries=data.get("maxRetries"),
            attempts=data.get("attempts") or 0,
            next_attempt_at=parse_time(data.get("nextAttemptAt")),
            completed_at=parse_time(data.get("completedAt")),
            cancelled_at=parse_time(data.get("cancelledAt")),
            last_error=data.get("lastError"),
            schedule_id=data.get("scheduleId"),
            callback=data.get("callback"),
            failure_callback=data.get("failureCallback"),
            callback_status=data.get("callbackStatus"),
            raw=data,
        )


@dataclass(frozen=True)
class Cancelled:
    job_id: str
    status: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Cancelled:
        return cls(job_id=data["jobId"], status=data["status"], raw=data)


@dataclass(frozen=True)
class Attempt:
    attempt_id: str
    attempt_number: int
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: int | None
    http_status: int | None
    outcome: str | None
    error: str | None
    response_excerpt: str | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Attempt:
        return cls(
            attempt_id=data["attemptId"],
            attempt_number=data["attemptNumber"],
            started_at=parse_time(data.get("startedAt")),
            finished_at=parse_time(data.get("finishedAt")),
            duration_ms=data.get("durationMs"),
            http_status=data.get("httpStatus"),
            outcome=data.get("outcome"),
            error=data.get("error"),
            response_excerpt=data.get("responseExcerpt"),
            raw=data,
        )


@dataclass(frozen=True)
class Usage:
    plan: str
    jobs_this_month: int
    limit: int | None
    days_until_reset: int
    resets_at: datetime | None
    requests_per_minute: int | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Usage:
        return cls(
            plan=data["plan"],
            jobs_this_month=data["jobsThisMonth"],
            limit=data.get("limit"),
            days_until_reset=data.get("daysUntilReset", 0),
            resets_at=parse_time(data.get("resetsAt")),
            requests_per_minute=(data.get("rateLimit") or {}).get("requestsPerMinute"),
            raw=data,
        )


@dataclass(frozen=True)
class BatchItem:
    """One result of a batch dispatch, in request order: a job or an API error."""

    index: int
    job: DispatchResult | None
    error: Any = None  # an APIError (its code, status and message) when the item failed
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class FlowControl:
    parallelism: int | None
    rate_per_second: float | None
    effective_parallelism: int | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> FlowControl:
        data = data or {}
        return cls(
            parallelism=data.get("parallelism"),
            rate_per_second=data.get("ratePerSecond"),
            effective_parallelism=data.get("effectiveParallelism"),
        )


@dataclass(frozen=True)
class EndpointState:
    state: str
    reason: str | None
    since: datetime | None

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> EndpointState:
        data = data or {}
        return cls(
            state=data.get("state", "active"),
            reason=data.get("reason"),
            since=parse_time(data.get("since")),
        )


@dataclass(frozen=True)
class Project:
    project_id: Any
    name: str | None
    webhook_url: str | None
    flow_control: FlowControl
    endpoint: EndpointState
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Project:
        return cls(
            project_id=data.get("projectId"),
            name=data.get("name"),
            webhook_url=data.get("webhookUrl"),
            flow_control=FlowControl.from_dict(data.get("flowControl")),
            endpoint=EndpointState.from_dict(data.get("endpoint")),
            raw=data,
        )


@dataclass(frozen=True)
class Schedule:
    schedule_id: str
    name: str | None
    cron: str
    timezone: str
    payload: Any
    max_retries: int | None
    catch_up: str | None
    paused: bool
    next_fire_at: datetime | None
    created_at: datetime | None
    last_fire_at: datetime | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schedule:
        return cls(
            schedule_id=data["scheduleId"],
            name=data.get("name"),
            cron=data.get("cron", ""),
            timezone=data.get("timezone", "UTC"),
            payload=data.get("payload"),
            max_retries=data.get("maxRetries"),
            catch_up=data.get("catchUp"),
            paused=bool(data.get("paused")),
            next_fire_at=parse_time(data.get("nextFireAt")),
            created_at=parse_time(data.get("createdAt")),
            last_fire_at=parse_time(data.get("lastFireAt")),
            raw=data,
        )


@dataclass(frozen=True)
class Fire:
    """One coming fire of a schedule: ``at`` in UTC, ``local`` in the schedule's time zone,
    ``dst`` None, ``"shifted"`` or ``"deduplicated"``."""

    at: datetime | None
    local: datetime | None
    dst: str | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fire:
        return cls(
            at=parse_time(data.get("at")),
            local=parse_time(data.get("local")),
            dst=data.get("dst"),
            raw=data,
        )
