"""Validation of job requests (DESIGN.md §5), independent of HTTP.

Each function returns clean values or raises BadRequest / PayloadTooLarge with a message
that repeats the bad input.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from . import clock, webhooks
from .errors import BadRequest, PayloadTooLarge, ServiceError
from .models import JobStatus
from .plans import Plan

MAX_IDEMPOTENCY_KEY = 255
MAX_LIST_LIMIT = 100
#: A batch dispatch holds 1 to this many jobs, in a body of at most BATCH_MAX_BYTES.
MAX_BATCH = 100
BATCH_MAX_BYTES = 1024 * 1024


#: The callback fields of a dispatch body (DESIGN.md §11) and what messages call them.
CALLBACK_FIELDS = {"callback": "callback URL", "failureCallback": "failureCallback URL"}


@dataclass(frozen=True)
class DispatchInput:
    payload: dict[str, Any]
    schedule_for: datetime
    max_retries: int
    idempotency_key: str | None
    #: Called when the job COMPLETED / FAILED (None: no callback).
    callback: str | None = None
    failure_callback: str | None = None


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


def parse_json_body(raw: bytes) -> Any:
    """Parse a request body as strict JSON (no NaN/Infinity, valid UTF-8 and Unicode).

    Raises:
        BadRequest: the body is empty or not strict JSON.
    """
    if not raw.strip():
        raise BadRequest("request body is empty; send a JSON object")
    try:
        text = raw.decode("utf-8")
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
        # Lone surrogates (e.g. "\ud800") parse in Python but no database stores them.
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeError:
        raise BadRequest("request body is not valid UTF-8 JSON") from None
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    return value


def require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest(f"request body must be a JSON object, got {type(body).__name__}")
    return body


def parse_schedule(value: Any, field: str, now: datetime, max_days: int) -> datetime:
    """Return when to deliver: ``now`` for null/past/now, else the parsed time.

    Raises:
        BadRequest: not an ISO-8601 string, or more than ``max_days`` ahead.
    """
    if value is None:
        return now
    if not isinstance(value, str):
        raise BadRequest(f"{field} must be an ISO-8601 string or null, got {value!r}", field=field)
    try:
        when = clock.parse_iso(value)
    except ValueError as exc:
        raise BadRequest(f"{field}: {exc}", field=field) from None
    if when - now > timedelta(days=max_days):
        raise BadRequest(
            f"{field} {value!r} is more than {max_days} days in the future", field=field
        )
    return max(when, now)


def parse_max_retries(value: Any, plan: Plan) -> int:
    """Return the effective retry budget: absent = plan cap, above the cap = capped."""
    if value is None:
        return plan.retry_cap
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"maxRetries must be an integer, got {value!r}", field="maxRetries")
    if value < 0:
        raise BadRequest(f"maxRetries must be 0 or more, got {value!r}", field="maxRetries")
    return min(value, plan.retry_cap)


def parse_payload(value: Any, plan: Plan) -> dict[str, Any]:
    if value is None:
        raise BadRequest("payload is required and must be a JSON object", field="payload")
    if not isinstance(value, dict):
        raise BadRequest(
            f"payload must be a JSON object, got {type(value).__name__}", field="payload"
        )
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    if size > plan.payload_max_bytes:
        raise PayloadTooLarge(
            f"payload is {size} bytes; the {plan.name} plan allows {plan.payload_max_bytes}",
            size=size,
            limit=plan.payload_max_bytes,
        )
    return value


def parse_callback(value: Any, field: str) -> str | None:
    """Return a callback URL (null/absent = none), checked like a webhook URL: http(s) with a
    host, no credentials, https:// unless ALLOW_HTTP_WEBHOOKS, and a public address unless
    ALLOW_PRIVATE_WEBHOOKS (SSRF). Raises BadRequest naming ``field``."""
    if value is None:
        return None
    return webhooks.validate_url(value, name=CALLBACK_FIELDS[field], field=field)


def parse_callbacks(body: dict[str, Any]) -> tuple[str | None, str | None]:
    """Return ``(callback, failureCallback)`` of a dispatch body (or a batch item)."""
    return (
        parse_callback(body.get("callback"), "callback"),
        parse_callback(body.get("failureCallback"), "failureCallback"),
    )


def parse_cursor(value: str | None) -> str | None:
    if value is not None and not value:
        raise BadRequest("cursor must not be empty; omit it for the first page", field="cursor")
    return value


def parse_idempotency_key(value: object, name: str = "Idempotency-Key") -> str | None:
    """Return the key (None when absent): 1-255 printable ASCII characters."""
    if value is None:
        return None
    field = {} if name == "Idempotency-Key" else {"field": name}
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string, got {value!r}", **field)
    if not value or len(value) > MAX_IDEMPOTENCY_KEY:
        raise BadRequest(
            f"{name} must be 1-{MAX_IDEMPOTENCY_KEY} characters, got {len(value)}", **field
        )
    if not value.isprintable() or not value.isascii():
        raise BadRequest(f"{name} must be printable ASCII", **field)
    return value


def parse_dispatch(
    body: dict[str, Any], plan: Plan, idempotency_key: str | None, now: datetime, max_days: int
) -> DispatchInput:
    """Validate a ``POST /api/jobs/dispatch`` body.

    ``scheduledFor`` is accepted as an alias of ``scheduleFor`` (the official JS SDK sends it).
    """
    if "scheduleFor" in body and "scheduledFor" in body:
        raise BadRequest("send either scheduleFor or scheduledFor, not both")
    field = "scheduledFor" if "scheduledFor" in body else "scheduleFor"
    payload = parse_payload(body.get("payload"), plan)
    schedule_for = parse_schedule(body.get(field), field, now, max_days)
    max_retries = parse_max_retries(body.get("maxRetries"), plan)
    callback, failure_callback = parse_callbacks(body)
    return DispatchInput(
        payload=payload,
        schedule_for=schedule_for,
        max_retries=max_retries,
        idempotency_key=parse_idempotency_key(idempotency_key),
        callback=callback,
        failure_callback=failure_callback,
    )


def parse_batch(
    body: dict[str, Any], plan: Plan, now: datetime, max_days: int
) -> list[DispatchInput | ServiceError]:
    """Validate a ``POST /api/jobs/dispatch/batch`` body ``{"jobs": [...]}``.

    Each item is a dispatch body with an optional ``idempotencyKey``, validated on its own: an
    invalid item becomes the error that refuses it, in its place.

    Raises:
        BadRequest: the request itself is invalid (no ``jobs`` array of 1-100 items); nothing
            of it is created.
    """
    if "jobs" not in body:
        raise BadRequest(
            f"jobs is required: an array of 1-{MAX_BATCH} dispatch bodies", field="jobs"
        )
    items = body["jobs"]
    if not isinstance(items, list):
        raise BadRequest(f"jobs must be an array, got {type(items).__name__}", field="jobs")
    if not 1 <= len(items) <= MAX_BATCH:
        raise BadRequest(f"jobs must hold 1-{MAX_BATCH} items, got {len(items)}", field="jobs")
    parsed: list[DispatchInput | ServiceError] = []
    for item in items:
        try:
            parsed.append(parse_batch_item(item, plan, now, max_days))
        except (BadRequest, PayloadTooLarge) as exc:
            parsed.append(exc)
    return parsed


def parse_batch_item(item: Any, plan: Plan, now: datetime, max_days: int) -> DispatchInput:
    """Validate one item of a batch: a dispatch body plus an optional ``idempotencyKey``."""
    if not isinstance(item, dict):
        raise BadRequest(f"each job must be a JSON object, got {type(item).__name__}")
    key = parse_idempotency_key(item.get("idempotencyKey"), "idempotencyKey")
    return parse_dispatch(item, plan, key, now, max_days)


def parse_reschedule(body: dict[str, Any], now: datetime, max_days: int) -> datetime:
    """Validate a ``PATCH /api/jobs/<id>`` body: ``{"scheduledFor": ISO or null}``."""
    field = "scheduledFor" if "scheduledFor" in body else "scheduleFor"
    if field not in body:
        raise BadRequest("scheduledFor is required (an ISO-8601 time, or null for now)")
    return parse_schedule(body[field], field, now, max_days)


LIST_PARAMETERS = ("status", "limit", "cursor")


def check_parameters(names: list[str], allowed: tuple[str, ...]) -> None:
    """Reject unknown or repeated query parameters (a typo must not silently mean "all")."""
    for name in names:
        if name not in allowed:
            raise BadRequest(
                f"unknown query parameter {name[:50]!r}; allowed: {', '.join(allowed)}"
            )
    repeated = {name for name in names if names.count(name) > 1}
    if repeated:
        raise BadRequest(f"query parameter {sorted(repeated)[0]!r} given more than once")


def parse_status(value: str | None) -> str | None:
    if value is None:
        return None
    status = value.upper()
    if status not in JobStatus.ALL:
        raise BadRequest(
            f"status must be one of {', '.join(JobStatus.ALL)}, got {value!r}", field="status"
        )
    return status


def parse_limit(value: str | None) -> int:
    if value is None:
        return 20
    if (
        not (value.isascii() and value.isdigit())
        or len(value) > 3
        or not 1 <= int(value) <= MAX_LIST_LIMIT
    ):
        raise BadRequest(
            f"limit must be an integer from 1 to {MAX_LIST_LIMIT}, got {value!r}", field="limit"
        )
    return int(value)
