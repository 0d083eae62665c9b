"""The synchronous client: ``Dispatched(api_key, base_url=...)``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

import httpx

from . import _core as core
from . import types as t
from ._core import UNSET, Call, PageData
from .errors import APIConnectionError, APIError

T = TypeVar("T")


class Page(Generic[T]):
    """One page of a list; iterating it walks every later page too (one request per page)."""

    def __init__(self, data: PageData[T], fetch: Callable[[str], PageData[T]]) -> None:
        self.items = data.items
        self.next_cursor = data.next_cursor
        self.raw = data.raw
        self._data = data
        self._fetch = fetch

    @property
    def has_next(self) -> bool:
        return bool(self.next_cursor)

    def next_page(self) -> Page[T] | None:
        if not self.next_cursor:
            return None
        return Page(self._fetch(self.next_cursor), self._fetch)

    def __iter__(self) -> Iterator[T]:
        return core.iter_pages(self._data, self._fetch)

    def __repr__(self) -> str:
        return f"Page({len(self.items)} items, next_cursor={self.next_cursor!r})"


class Dispatched:
    """A client of the Dispatched API.

    Args:
        api_key: the project's API key (default: ``DISPATCHED_API_KEY``).
        base_url: the server (default: ``DISPATCHED_BASE_URL``, else http://127.0.0.1:8000).
        timeout: seconds per request.
        max_retries: how often a failed request is sent again: 429 RATE_LIMITED and
            500/502/503/504 honouring Retry-After, and lost connections. Calls that are not
            idempotent (dispatch without an idempotency key, replay, creating a schedule) are
            never retried.
        max_retry_wait: give up rather than wait longer than this before a retry (seconds).
        auto_idempotency_keys: give every dispatch (and batch item) without an idempotency key
            a generated one, which makes retrying it safe.
        http_client: an ``httpx.Client`` of your own (proxies, transports, ...).
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 2,
        max_retry_wait: float = 60.0,
        auto_idempotency_keys: bool = False,
        http_client: httpx.Client | None = None,
    ) -> None:
        self.config = core.Config.build(
            api_key, base_url, timeout, max_retries, max_retry_wait, auto_idempotency_keys
        )
        self._http = http_client or httpx.Client(timeout=timeout)
        self._owns_http = http_client is None
        self.jobs = Jobs(self)
        self.schedules = Schedules(self)
        self.project = ProjectAPI(self)

    def usage(self) -> t.Usage:
        """This month's usage against the team's plan."""
        return self._run(core.usage())

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Dispatched:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._http.request(
                    call.method,
                    self.config.base_url + call.url_path,
                    params=call.params,
                    json=call.json,
                    headers={**self.config.headers(), **call.headers},
                    timeout=self.config.timeout,
                )
            except httpx.TransportError as exc:
                connect = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))
                delay = core.retry_delay(call, attempt, self.config, None, connect)
                if delay is None:
                    raise APIConnectionError(f"{call.method} {call.url_path}: {exc}") from exc
                time.sleep(delay)
                continue
            try:
                body = response.json() if response.content else None
            except ValueError:
                body = None
            try:
                core.check(response.status_code, body, response.headers, response.text)
            except APIError as error:
                delay = core.retry_delay(call, attempt, self.config, error, False)
                if delay is None:
                    raise
                time.sleep(delay)
                continue
            return call.parse(response.status_code, body)


class Jobs:
    def __init__(self, client: Dispatched) -> None:
        self._client = client

    def dispatch(
        self,
        payload: Any,
        *,
        schedule_for: datetime | timedelta | str | None = None,
        max_retries: int | None = None,
        idempotency_key: str | None = None,
        callback: str | None = None,
        failure_callback: str | None = None,
    ) -> t.DispatchResult:
        """Create a job: deliver ``payload`` to the project's webhook now or at ``schedule_for``
        (a datetime, naive = UTC; a timedelta from now; or an ISO string)."""
        call = core.dispatch(
            self._client.config,
            payload,
            schedule_for,
            max_retries,
            idempotency_key,
            callback,
            failure_callback,
        )
        return self._client._run(call)

    def dispatch_batch(self, jobs: Sequence[Mapping[str, Any]]) -> list[t.BatchItem]:
        """Create up to 100 jobs in one request; one result per item, in order (a bad item
        gets its error and does not sink the others). Items are dispatch bodies: ``payload``
        and optionally ``schedule_for``, ``max_retries``, ``idempotency_key``, ..."""
        return self._client._run(core.dispatch_batch(self._client.config, jobs))

    def get(self, job_id: str) -> t.Job:
        return self._client._run(core.get_job(job_id))

    def list(
        self, *, status: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> Page[t.Job]:
        """Jobs, newest first; iterate the page to walk them all."""

        def fetch(next_cursor: str | None) -> PageData[t.Job]:
            return self._client._run(core.list_jobs(status, limit, next_cursor))

        return Page(fetch(cursor), fetch)

    def cancel(self, job_id: str) -> t.Cancelled:
        """Cancel a QUEUED job (else Conflict)."""
        return self._client._run(core.cancel_job(job_id))

    def reschedule(self, job_id: str, at: datetime | timedelta | str | None = None) -> t.Job:
        """Move a QUEUED job to ``at`` (None or a past time = now)."""
        return self._client._run(core.reschedule_job(job_id, at))

    def replay(self, job_id: str) -> t.Job:
        """Queue a FAILED job again with a fresh retry budget (counts toward the quota)."""
        return self._client._run(core.replay_job(job_id))

    def attempts(self, job_id: str) -> list[t.Attempt]:
        return self._client._run(core.job_attempts(job_id))


class ProjectAPI:
    def __init__(self, client: Dispatched) -> None:
        self._client = client

    def get(self) -> t.Project:
        return self._client._run(core.get_project())

    def update(
        self, *, webhook_url: Any = UNSET, parallelism: Any = UNSET, rate_per_second: Any = UNSET
    ) -> t.Project:
        """Change the webhook URL and/or flow control (an ``admin`` key); None resets a flow
        control field to its default."""
        return self._client._run(core.update_project(webhook_url, parallelism, rate_per_second))

    def resume(self) -> t.Project:
        """Resume a paused endpoint."""
        return self._client._run(core.resume_project())


class Schedules:
    def __init__(self, client: Dispatched) -> None:
        self._client = client

    def create(
        self,
        cron: str,
        payload: Any,
        *,
        timezone: str | None = None,
        max_retries: int | None = None,
        name: str | None = None,
        catch_up: str | None = None,
    ) -> t.Schedule:
        call = core.create_schedule(cron, payload, timezone, max_retries, name, catch_up)
        return self._client._run(call)

    def list(self, *, limit: int | None = None, cursor: str | None = None) -> Page[t.Schedule]:
        def fetch(next_cursor: str | None) -> PageData[t.Schedule]:
            return self._client._run(core.list_schedules(limit, next_cursor))

        return Page(fetch(cursor), fetch)

    def get(self, schedule_id: str) -> t.Schedule:
        return self._client._run(core.get_schedule(schedule_id))

    def update(
        self,
        schedule_id: str,
        *,
        cron: Any = UNSET,
        timezone: Any = UNSET,
        payload: Any = UNSET,
        max_retries: Any = UNSET,
        name: Any = UNSET,
        catch_up: Any = UNSET,
    ) -> t.Schedule:
        fields = {
            "cron": cron,
            "timezone": timezone,
            "payload": payload,
            "max_retries": max_retries,
            "name": name,
            "catch_up": catch_up,
        }
        return self._client._run(core.update_schedule(schedule_id, fields))

    def delete(self, schedule_id: str) -> None:
        self._client._run(core.delete_schedule(schedule_id))

    def pause(self, schedule_id: str) -> t.Schedule:
        return self._client._run(core.pause_schedule(schedule_id, True))

    def resume(self, schedule_id: str) -> t.Schedule:
        return self._client._run(core.pause_schedule(schedule_id, False))

    def preview(
        self, schedule_id: str, *, count: int | None = None, start: datetime | str | None = None
    ) -> list[t.Fire]:
        """The schedule's next fire times (UTC and local, with DST notes)."""
        return self._client._run(core.preview_schedule(schedule_id, count, start))

    def preview_cron(
        self,
        cron: str,
        *,
        timezone: str | None = None,
        count: int | None = None,
        start: datetime | str | None = None,
    ) -> list[t.Fire]:
        """The fire times of an expression, without creating a schedule."""
        return self._client._run(core.preview_cron(cron, timezone, count, start))

    def jobs(
        self, schedule_id: str, *, limit: int | None = None, cursor: str | None = None
    ) -> Page[t.Job]:
        """The jobs the schedule created, newest first."""

        def fetch(next_cursor: str | None) -> PageData[t.Job]:
            return self._client._run(core.schedule_jobs(schedule_id, limit, next_cursor))

        return Page(fetch(cursor), fetch)
