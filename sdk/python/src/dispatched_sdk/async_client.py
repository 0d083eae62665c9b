"""The asyncio client: ``AsyncDispatched(api_key, base_url=...)``, the same calls as
``Dispatched``, awaited."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

import httpx

from . import _core as core
from . import types as t
from ._core import UNSET, Call, PageData
from .errors import APIConnectionError, APIError

T = TypeVar("T")
Fetch = Callable[[str | None], Awaitable[PageData[T]]]


class AsyncPage(Generic[T]):
    """One page of a list; ``async for`` over it walks every later page too."""

    def __init__(self, data: PageData[T], fetch: Fetch[T]) -> None:
        self.items = data.items
        self.next_cursor = data.next_cursor
        self.raw = data.raw
        self._data = data
        self._fetch = fetch

    @property
    def has_next(self) -> bool:
        return bool(self.next_cursor)

    async def next_page(self) -> AsyncPage[T] | None:
        if not self.next_cursor:
            return None
        return AsyncPage(await self._fetch(self.next_cursor), self._fetch)

    async def __aiter__(self) -> AsyncIterator[T]:
        data = self._data
        while True:
            for item in data.items:
                yield item
            if not data.next_cursor:
                return
            data = await self._fetch(data.next_cursor)

    def __repr__(self) -> str:
        return f"AsyncPage({len(self.items)} items, next_cursor={self.next_cursor!r})"


class AsyncPaginator(Generic[T]):
    """What a list call returns: ``await`` it for the first page, or ``async for`` every item."""

    def __init__(self, fetch: Fetch[T], cursor: str | None) -> None:
        self._fetch = fetch
        self._cursor = cursor

    async def _first(self) -> AsyncPage[T]:
        return AsyncPage(await self._fetch(self._cursor), self._fetch)

    def __await__(self) -> Generator[Any, None, AsyncPage[T]]:
        return self._first().__await__()

    async def __aiter__(self) -> AsyncIterator[T]:
        page = await self._first()
        async for item in page:
            yield item


class AsyncDispatched:
    """The asyncio client; arguments as for ``Dispatched`` (``http_client``: an
    ``httpx.AsyncClient``). Use ``async with`` or ``await client.close()``."""

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 2,
        max_retry_wait: float = 60.0,
        auto_idempotency_keys: bool = False,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.config = core.Config.build(
            api_key, base_url, timeout, max_retries, max_retry_wait, auto_idempotency_keys
        )
        self._http = http_client or httpx.AsyncClient(timeout=timeout)
        self._owns_http = http_client is None
        self.jobs = AsyncJobs(self)
        self.schedules = AsyncSchedules(self)
        self.project = AsyncProjectAPI(self)

    async def usage(self) -> t.Usage:
        return await self._run(core.usage())

    async def close(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncDispatched:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _run(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._http.request(
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
                await asyncio.sleep(delay)
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
                await asyncio.sleep(delay)
                continue
            return call.parse(response.status_code, body)


class AsyncJobs:
    def __init__(self, client: AsyncDispatched) -> None:
        self._client = client

    async def dispatch(
        self,
        payload: Any,
        *,
        schedule_for: datetime | timedelta | str | None = None,
        max_retries: int | None = None,
        idempotency_key: str | None = None,
        callback: str | None = None,
        failure_callback: str | None = None,
    ) -> t.DispatchResult:
        call = core.dispatch(
            self._client.config,
            payload,
            schedule_for,
            max_retries,
            idempotency_key,
            callback,
            failure_callback,
        )
        return await self._client._run(call)

    async def dispatch_batch(self, jobs: Sequence[Mapping[str, Any]]) -> list[t.BatchItem]:
        return await self._client._run(core.dispatch_batch(self._client.config, jobs))

    async def get(self, job_id: str) -> t.Job:
        return await self._client._run(core.get_job(job_id))

    def list(
        self, *, status: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> AsyncPaginator[t.Job]:
        async def fetch(next_cursor: str | None) -> PageData[t.Job]:
            return await self._client._run(core.list_jobs(status, limit, next_cursor))

        return AsyncPaginator(fetch, cursor)

    async def cancel(self, job_id: str) -> t.Cancelled:
        return await self._client._run(core.cancel_job(job_id))

    async def reschedule(self, job_id: str, at: datetime | timedelta | str | None = None) -> t.Job:
        return await self._client._run(core.reschedule_job(job_id, at))

    async def replay(self, job_id: str) -> t.Job:
        return await self._client._run(core.replay_job(job_id))

    async def attempts(self, job_id: str) -> list[t.Attempt]:
        return await self._client._run(core.job_attempts(job_id))


class AsyncProjectAPI:
    def __init__(self, client: AsyncDispatched) -> None:
        self._client = client

    async def get(self) -> t.Project:
        return await self._client._run(core.get_project())

    async def update(
        self, *, webhook_url: Any = UNSET, parallelism: Any = UNSET, rate_per_second: Any = UNSET
    ) -> t.Project:
        call = core.update_project(webhook_url, parallelism, rate_per_second)
        return await self._client._run(call)

    async def resume(self) -> t.Project:
        return await self._client._run(core.resume_project())


class AsyncSchedules:
    def __init__(self, client: AsyncDispatched) -> None:
        self._client = client

    async def create(
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
        return await self._client._run(call)

    def list(
        self, *, limit: int | None = None, cursor: str | None = None
    ) -> AsyncPaginator[t.Schedule]:
        async def fetch(next_cursor: str | None) -> PageData[t.Schedule]:
            return await self._client._run(core.list_schedules(limit, next_cursor))

        return AsyncPaginator(fetch, cursor)

    async def get(self, schedule_id: str) -> t.Schedule:
        return await self._client._run(core.get_schedule(schedule_id))

    async def update(
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
        return await self._client._run(core.update_schedule(schedule_id, fields))

    async def delete(self, schedule_id: str) -> None:
        await self._client._run(core.delete_schedule(schedule_id))

    async def pause(self, schedule_id: str) -> t.Schedule:
        return await self._client._run(core.pause_schedule(schedule_id, True))

    async def resume(self, schedule_id: str) -> t.Schedule:
        return await self._client._run(core.pause_schedule(schedule_id, False))

    async def preview(
        self, schedule_id: str, *, count: int | None = None, start: datetime | str | None = None
    ) -> list[t.Fire]:
        return await self._client._run(core.preview_schedule(schedule_id, count, start))

    async def preview_cron(
        self,
        cron: str,
        *,
        timezone: str | None = None,
        count: int | None = None,
        start: datetime | str | None = None,
    ) -> list[t.Fire]:
        return await self._client._run(core.preview_cron(cron, timezone, count, start))

    def jobs(
        self, schedule_id: str, *, limit: int | None = None, cursor: str | None = None
    ) -> AsyncPaginator[t.Job]:
        async def fetch(next_cursor: str | None) -> PageData[t.Job]:
            return await self._client._run(core.schedule_jobs(schedule_id, limit, next_cursor))

        return AsyncPaginator(fetch, cursor)
