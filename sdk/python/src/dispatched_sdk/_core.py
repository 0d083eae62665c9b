"""What the sync and async clients share: configuration, the request of each API call, the
retry rule and the parsing of answers. The clients only send the requests."""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from . import types as t
from ._version import __version__
from .errors import APIError, error_for, parse_retry_after

T = TypeVar("T")

ENV_API_KEY = "DISPATCHED_API_KEY"
ENV_BASE_URL = "DISPATCHED_BASE_URL"
DEFAULT_BASE_URL = "http://127.0.0.1:8000"
USER_AGENT = f"dispatched-sdk-python/{__version__}"
#: Statuses worth retrying (with RATE_LIMITED 429): the server or a proxy in front of it failed.
RETRY_STATUSES = frozenset({500, 502, 503, 504})
#: HTTP status of each error code, for batch items (which carry only ``{error, data}``).
CODE_STATUS = {
    "BAD_REQUEST": 400,
    "UNAUTHORIZED": 401,
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "CONFLICT": 409,
    "PAYLOAD_TOO_LARGE": 413,
    "UNSUPPORTED_MEDIA_TYPE": 415,
    "RATE_LIMITED": 429,
    "LIMIT_REACHED": 429,
    "INTERNAL_ERROR": 500,
}


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


#: "Leave this field as it is" in updates, where None means "reset to the default".
UNSET: Any = _Unset()


def new_idempotency_key() -> str:
    """A fresh Idempotency-Key: a repeat of the same call within 24 h returns the original."""
    return f"sdk_{uuid.uuid4().hex}"


@dataclass
class Config:
    api_key: str
    base_url: str
    timeout: float
    max_retries: int
    max_retry_wait: float
    auto_idempotency_keys: bool

    @classmethod
    def build(
        cls,
        api_key: str | None,
        base_url: str | None,
        timeout: float,
        max_retries: int,
        max_retry_wait: float,
        auto_idempotency_keys: bool,
    ) -> Config:
        api_key = api_key or os.environ.get(ENV_API_KEY, "")
        if not api_key:
            raise ValueError(f"no API key: pass api_key= or set {ENV_API_KEY}")
        base_url = (base_url or os.environ.get(ENV_BASE_URL) or DEFAULT_BASE_URL).rstrip("/")
        if base_url.endswith("/api"):
            base_url = base_url[: -len("/api")]
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries!r}")
        return cls(api_key, base_url, timeout, max_retries, max_retry_wait, auto_idempotency_keys)

    def headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.api_key}",
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
        }


@dataclass
class Call(Generic[T]):
    """One API request and how to read its answer."""

    method: str
    path: str
    parse: Callable[[int, Any], T]
    params: dict[str, Any] | None = None
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    #: Safe to send again after a 429/5xx or a lost answer (idempotent, or carries a key).
    retryable: bool = True

    @property
    def url_path(self) -> str:
        return "/api" + self.path


def retry_delay(
    call: Call[Any], attempt: int, config: Config, error: APIError | None, connect_failed: bool
) -> float | None:
    """Seconds to wait before sending ``call`` again, or None to give up.

    ``attempt`` counts the sends so far (1 after the first). A request that never reached the
    server (connection refused) is always safe to repeat; otherwise only retryable calls are.
    429 RATE_LIMITED and 500/502/503/504 are retried, honouring Retry-After; LIMIT_REACHED (the
    monthly quota) is not: it will not clear by waiting.
    """
    if attempt > config.max_retries:
        return None
    if error is not None:
        if not call.retryable:
            return None
        if error.code == "RATE_LIMITED" or (error.status in RETRY_STATUSES):
            after = parse_retry_after(error.headers.get("retry-after"))
        else:
            return None
    elif connect_failed or call.retryable:
        after = None
    else:
        return None
    if after is None:
        after = min(8.0, 0.5 * 2 ** (attempt - 1)) * random.uniform(0.75, 1.25)
    return after if after <= config.max_retry_wait else None


def check(status: int, body: Any, headers: Mapping[str, str], text: str) -> None:
    """Raise the APIError of an error answer."""
    if status >= 400:
        raise error_for(status, body, headers, text)


# --- path and body helpers --------------------------------------------------------------------


def _id(value: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty id, got {value!r}")
    return quote(value, safe="")


def _clean(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


def _items(key: str, parse: Callable[[dict[str, Any]], T]) -> Callable[[int, Any], PageData[T]]:
    def read(_: int, data: Any) -> PageData[T]:
        return PageData([parse(x) for x in data.get(key, [])], data.get("nextCursor"), data)

    return read


@dataclass
class PageData(Generic[T]):
    items: list[T]
    next_cursor: str | None
    raw: dict[str, Any]


_SNAKE = {
    "schedule_for": "scheduleFor",
    "scheduled_for": "scheduledFor",
    "max_retries": "maxRetries",
    "idempotency_key": "idempotencyKey",
    "failure_callback": "failureCallback",
}


def dispatch_body(
    payload: Any,
    schedule_for: datetime | timedelta | str | None,
    max_retries: int | None,
    callback: str | None,
    failure_callback: str | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"payload": payload}
    if schedule_for is not None:
        body["scheduleFor"] = t.format_time(schedule_for)
    return {
        **body,
        **_clean(
            {"maxRetries": max_retries, "callback": callback, "failureCallback": failure_callback}
        ),
    }


def batch_item(item: Mapping[str, Any], auto_key: bool) -> dict[str, Any]:
    """A batch item in the API's form (snake_case keys and datetimes accepted)."""
    if "payload" not in item:
        raise ValueError(f"each batch item needs a payload, got {dict(item)!r}")
    body: dict[str, Any] = {}
    for key, value in item.items():
        name = _SNAKE.get(key, key)
        if name in ("scheduleFor", "scheduledFor"):
            value = t.format_time(value)
        body[name] = value
    if auto_key and not body.get("idempotencyKey"):
        body["idempotencyKey"] = new_idempotency_key()
    return body


# --- the calls --------------------------------------------------------------------------------


def dispatch(
    config: Config,
    payload: Any,
    schedule_for: datetime | timedelta | str | None,
    max_retries: int | None,
    idempotency_key: str | None,
    callback: str | None,
    failure_callback: str | None,
) -> Call[t.DispatchResult]:
    if idempotency_key is None and config.auto_idempotency_keys:
        idempotency_key = new_idempotency_key()
    return Call(
        "POST",
        "/jobs/dispatch",
        lambda status, data: t.DispatchResult.from_dict(data, created=status == 201),
        json=dispatch_body(payload, schedule_for, max_retries, callback, failure_callback),
        headers={"Idempotency-Key": idempotency_key} if idempotency_key else {},
        retryable=idempotency_key is not None,
    )


def dispatch_batch(config: Config, items: Sequence[Mapping[str, Any]]) -> Call[list[t.BatchItem]]:
    body = [batch_item(item, config.auto_idempotency_keys) for item in items]

    def read(_: int, data: Any) -> list[t.BatchItem]:
        results = []
        for index, result in enumerate(data.get("results", [])):
            if isinstance(result, dict) and "error" in result:
                code = str(result["error"])
                error = error_for(CODE_STATUS.get(code, 400), result)
                results.append(t.BatchItem(index, None, error, result))
            else:
                results.append(t.BatchItem(index, t.DispatchResult.from_dict(result), None, result))
        return results

    return Call(
        "POST",
        "/jobs/dispatch/batch",
        read,
        json={"jobs": body},
        retryable=all(item.get("idempotencyKey") for item in body),
    )


def get_job(job_id: str) -> Call[t.Job]:
    return Call("GET", f"/jobs/{_id(job_id)}", lambda _, d: t.Job.from_dict(d))


def list_jobs(status: str | None, limit: int | None, cursor: str | None) -> Call[PageData[t.Job]]:
    params = _clean({"status": status, "limit": limit, "cursor": cursor})
    return Call("GET", "/jobs", _items("jobs", t.Job.from_dict), params=params)


def cancel_job(job_id: str) -> Call[t.Cancelled]:
    return Call("DELETE", f"/jobs/{_id(job_id)}", lambda _, d: t.Cancelled.from_dict(d))


def reschedule_job(job_id: str, at: datetime | timedelta | str | None) -> Call[t.Job]:
    return Call(
        "PATCH",
        f"/jobs/{_id(job_id)}",
        lambda _, d: t.Job.from_dict(d),
        json={"scheduledFor": t.format_time(at)},
    )


def replay_job(job_id: str) -> Call[t.Job]:
    # Not retried: a replay counts toward the quota and a repeat after a lost answer is a 409.
    return Call(
        "POST", f"/jobs/{_id(job_id)}/replay", lambda _, d: t.Job.from_dict(d), retryable=False
    )


def job_attempts(job_id: str) -> Call[list[t.Attempt]]:
    return Call(
        "GET",
        f"/jobs/{_id(job_id)}/attempts",
        lambda _, d: [t.Attempt.from_dict(a) for a in d.get("attempts", [])],
    )


def usage() -> Call[t.Usage]:
    return Call("GET", "/usage", lambda _, d: t.Usage.from_dict(d))


def get_project() -> Call[t.Project]:
    return Call("GET", "/project", lambda _, d: t.Project.from_dict(d))


def update_project(webhook_url: Any, parallelism: Any, rate_per_second: Any) -> Call[t.Project]:
    body: dict[str, Any] = {}
    if webhook_url is not UNSET:
        body["webhookUrl"] = webhook_url
    flow = {
        k: v
        for k, v in (("parallelism", parallelism), ("ratePerSecond", rate_per_second))
        if v is not UNSET
    }
    if flow:
        body["flowControl"] = flow
    if not body:
        raise ValueError("update() needs webhook_url=, parallelism= and/or rate_per_second=")
    return Call("PATCH", "/project", lambda _, d: t.Project.from_dict(d), json=body)


def resume_project() -> Call[t.Project]:
    return Call("POST", "/project/resume", lambda _, d: t.Project.from_dict(d))


def create_schedule(
    cron: str,
    payload: Any,
    timezone: str | None,
    max_retries: int | None,
    name: str | None,
    catch_up: str | None,
) -> Call[t.Schedule]:
    body = {"cron": cron, "payload": payload}
    body.update(
        _clean({"timezone": timezone, "maxRetries": max_retries, "name": name, "catchUp": catch_up})
    )
    return Call(
        "POST", "/schedules", lambda _, d: t.Schedule.from_dict(d), json=body, retryable=False
    )


def list_schedules(limit: int | None, cursor: str | None) -> Call[PageData[t.Schedule]]:
    params = _clean({"limit": limit, "cursor": cursor})
    return Call("GET", "/schedules", _items("schedules", t.Schedule.from_dict), params=params)


def get_schedule(schedule_id: str) -> Call[t.Schedule]:
    return Call("GET", f"/schedules/{_id(schedule_id)}", lambda _, d: t.Schedule.from_dict(d))


def update_schedule(schedule_id: str, fields: Mapping[str, Any]) -> Call[t.Schedule]:
    names = {"max_retries": "maxRetries", "catch_up": "catchUp"}
    body = {names.get(k, k): v for k, v in fields.items() if v is not UNSET}
    if not body:
        raise ValueError("update() needs at least one field to change")
    return Call(
        "PATCH", f"/schedules/{_id(schedule_id)}", lambda _, d: t.Schedule.from_dict(d), json=body
    )


def delete_schedule(schedule_id: str) -> Call[None]:
    return Call("DELETE", f"/schedules/{_id(schedule_id)}", lambda _, d: None)


def pause_schedule(schedule_id: str, pause: bool) -> Call[t.Schedule]:
    action = "pause" if pause else "resume"
    return Call(
        "POST", f"/schedules/{_id(schedule_id)}/{action}", lambda _, d: t.Schedule.from_dict(d)
    )


def _fires(_: int, data: Any) -> list[t.Fire]:
    return [t.Fire.from_dict(f) for f in data.get("fires", [])]


def preview_schedule(
    schedule_id: str, count: int | None, start: datetime | str | None
) -> Call[list[t.Fire]]:
    params = _clean({"count": count, "from": t.format_time(start)})
    return Call("GET", f"/schedules/{_id(schedule_id)}/preview", _fires, params=params)


def preview_cron(
    cron: str, timezone: str | None, count: int | None, start: datetime | str | None
) -> Call[list[t.Fire]]:
    params = _clean(
        {"cron": cron, "timezone": timezone, "count": count, "from": t.format_time(start)}
    )
    return Call("GET", "/schedules/preview", _fires, params=params)


def schedule_jobs(schedule_id: str, limit: int | None, cursor: str | None) -> Call[PageData[t.Job]]:
    params = _clean({"limit": limit, "cursor": cursor})
    return Call(
        "GET", f"/schedules/{_id(schedule_id)}/jobs", _items("jobs", t.Job.from_dict), params=params
    )


def iter_pages(first: PageData[T], fetch: Callable[[str], PageData[T]]) -> Iterator[T]:
    page = first
    while True:
        yield from page.items
        if not page.next_cursor:
            return
        page = fetch(page.next_cursor)
