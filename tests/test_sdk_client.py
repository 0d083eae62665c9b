"""The Python SDK's clients (sdk/python) against a live server: real HTTP, DB and Redis.

The retry rule is also checked against a tiny scripted HTTP server on 127.0.0.1 (the only way
to make a real server answer 503 on cue).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import pytest
from dispatched_sdk import (
    APIError,
    AsyncDispatched,
    BadRequest,
    Conflict,
    Dispatched,
    DispatchResult,
    Job,
    LimitReached,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
)
from dispatched_sdk.errors import APIConnectionError

from dispatched.extensions import db
from dispatched.models import Job as JobRow

T = TypeVar("T")


@pytest.fixture()
def sdk(live_server, team) -> Iterator[Dispatched]:
    with Dispatched(team.token, base_url=live_server) as client:
        yield client


def run_async(scenario: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine in a thread of its own: a session fixture (Playwright's sync API, in
    the browser tests) may keep an event loop running in the main thread."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(scenario())).result()


def fail(app, job_id: str) -> None:
    """Leave a job FAILED after 4 attempts, the way the delivery engine does."""
    with app.app_context():
        job = db.session.get(JobRow, job_id)
        job.status, job.attempts, job.last_error = "FAILED", 4, "HTTP 500"
        db.session.commit()


def test_dispatch_get_and_typed_results(sdk):
    when = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    result = sdk.jobs.dispatch({"order": 42, "é": "ü"}, schedule_for=when, max_retries=1)
    assert isinstance(result, DispatchResult) and result.created
    assert result.job_id.startswith("job_") and result.status == "QUEUED"
    assert result.scheduled_for == when and result.scheduled_for.tzinfo is not None
    assert result.max_retries == 1 and isinstance(result.created_at, datetime)

    job = sdk.jobs.get(result.job_id)
    assert isinstance(job, Job)
    assert job.payload == {"order": 42, "é": "ü"} and list(job.payload) == ["order", "é"]
    assert job.status == "QUEUED" and job.attempts == 0 and job.scheduled_for == when
    assert job.raw["jobId"] == result.job_id  # the JSON stays reachable


def test_times_in_naive_utc_timedelta_and_strings(sdk):
    naive = datetime.now(UTC).replace(tzinfo=None, microsecond=0) + timedelta(days=3)
    assert sdk.jobs.dispatch({}, schedule_for=naive).scheduled_for == naive.replace(tzinfo=UTC)
    soon = sdk.jobs.dispatch({}, schedule_for=timedelta(minutes=10)).scheduled_for
    assert timedelta(minutes=9) < soon - datetime.now(UTC) <= timedelta(minutes=10)
    local = (naive + timedelta(hours=2)).isoformat() + "+02:00"  # the same instant as naive UTC
    assert sdk.jobs.dispatch({}, schedule_for=local).scheduled_for == naive.replace(tzinfo=UTC)


def test_list_pages_and_auto_paging(sdk):
    ids = [sdk.jobs.dispatch({"n": n}, schedule_for=timedelta(hours=1)).job_id for n in range(5)]
    page = sdk.jobs.list(limit=2)
    assert [j.job_id for j in page.items] == ids[::-1][:2] and page.has_next
    assert [j.job_id for j in page.next_page().items] == ids[::-1][2:4]
    assert [j.job_id for j in page] == ids[::-1]  # iterating walks every page
    assert [j.job_id for j in sdk.jobs.list(status="QUEUED", limit=100)] == ids[::-1]
    assert list(sdk.jobs.list(status="FAILED")) == []


def test_cancel_reschedule_replay_attempts_and_usage(app, sdk):
    later = sdk.jobs.dispatch({"a": 1}, schedule_for=timedelta(hours=1)).job_id
    new_time = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=3)
    assert sdk.jobs.reschedule(later, new_time).scheduled_for == new_time
    cancelled = sdk.jobs.cancel(later)
    assert (cancelled.job_id, cancelled.status) == (later, "CANCELLED")
    with pytest.raises(Conflict) as exc:
        sdk.jobs.cancel(later)
    assert (exc.value.code, exc.value.status) == ("CONFLICT", 409)
    assert exc.value.message == "Job is not in QUEUED status"

    failed = sdk.jobs.dispatch({"b": 2}, schedule_for=timedelta(hours=1)).job_id
    fail(app, failed)
    assert sdk.jobs.replay(failed).status == "QUEUED"
    assert sdk.jobs.attempts(failed) == []
    usage = sdk.usage()
    assert usage.plan == "free" and usage.jobs_this_month == 3  # the replay counts
    assert usage.limit == 1000 and usage.requests_per_minute == 60
    assert usage.resets_at > datetime.now(UTC)


def test_errors_carry_code_status_and_message(sdk, live_server):
    with pytest.raises(NotFound) as exc:
        sdk.jobs.get("job_nope")
    assert (exc.value.code, exc.value.status) == ("NOT_FOUND", 404)
    with pytest.raises(BadRequest) as exc:
        sdk.jobs.dispatch({}, max_retries=-1)
    assert "maxRetries" in exc.value.message and exc.value.status == 400
    with pytest.raises(BadRequest):
        sdk.jobs.dispatch([1, 2])  # payload must be an object
    with pytest.raises(PayloadTooLarge) as exc:
        sdk.jobs.dispatch({"big": "x" * 20_000})
    assert exc.value.code == "PAYLOAD_TOO_LARGE"
    with pytest.raises(Unauthorized) as exc, Dispatched("disp_k1_wrong", base_url=live_server) as c:
        c.usage()
    assert exc.value.message == "Unauthorized" and isinstance(exc.value, APIError)
    with pytest.raises(APIConnectionError), Dispatched("k", base_url="http://127.0.0.1:9") as c:
        c.usage()
    with pytest.raises(ValueError, match="DISPATCHED_API_KEY"):
        Dispatched(None)


def test_api_key_and_base_url_from_the_environment(monkeypatch, live_server, team):
    monkeypatch.setenv("DISPATCHED_API_KEY", team.token)
    monkeypatch.setenv("DISPATCHED_BASE_URL", live_server + "/api/")
    with Dispatched() as client:
        assert client.usage().plan == "free"


def test_idempotency_key_returns_the_original(sdk):
    first = sdk.jobs.dispatch({"x": 1}, idempotency_key="order-42")
    again = sdk.jobs.dispatch({"x": 2}, idempotency_key="order-42")
    assert first.created and not again.created and again.job_id == first.job_id


def test_rate_limited_exposes_retry_after(live_server, make_team):
    team = make_team("tiny_rate")  # 5 requests a minute
    with Dispatched(team.token, base_url=live_server, max_retry_wait=0.5) as client:
        for _ in range(5):
            client.usage()
        with pytest.raises(RateLimited) as exc:
            client.usage()  # a GET is retryable, but not by waiting up to a minute
    assert exc.value.status == 429 and exc.value.code == "RATE_LIMITED"
    assert 0 < exc.value.retry_after <= 60


def test_limit_reached_is_not_retried(live_server, make_team):
    team = make_team("tiny_quota")  # 10 jobs a month
    with Dispatched(team.token, base_url=live_server, auto_idempotency_keys=True) as client:
        for n in range(10):
            client.jobs.dispatch({"n": n})
        with pytest.raises(LimitReached) as exc:
            client.jobs.dispatch({"n": 10})
    assert (exc.value.status, exc.value.code) == (429, "LIMIT_REACHED")


def test_async_client(live_server, team):
    async def scenario() -> None:
        async with AsyncDispatched(team.token, base_url=live_server) as client:
            created = [
                await client.jobs.dispatch({"n": n}, schedule_for=timedelta(hours=1))
                for n in range(3)
            ]
            ids = [c.job_id for c in created]
            first = await client.jobs.list(limit=2)
            assert [j.job_id for j in first.items] == ids[::-1][:2]
            assert [j.job_id async for j in client.jobs.list(limit=2)] == ids[::-1]
            assert (await client.jobs.get(ids[0])).payload == {"n": 0}
            assert (await client.jobs.cancel(ids[0])).status == "CANCELLED"
            assert (await client.jobs.reschedule(ids[1], None)).job_id == ids[1]
            assert (await client.usage()).jobs_this_month == 3
            with pytest.raises(NotFound):
                await client.jobs.attempts("job_nope")

    run_async(scenario)


# --- the retry rule, against a scripted server ------------------------------------------------


class Scripted:
    """An HTTP server answering from a script of (status, headers, body); records requests."""

    def __init__(self, script: list[tuple[int, dict[str, str], Any]]) -> None:
        self.script = script
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                self.rfile.read(length)
                scripted.requests.append((self.command, self.path, dict(self.headers.items())))
                status, headers, body = scripted.script.pop(0)
                data = json.dumps(body).encode()
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = _answer  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


USAGE = {"plan": "free", "jobsThisMonth": 0, "limit": 10, "daysUntilReset": 3, "rateLimit": {}}
UNAVAILABLE = (503, {"Retry-After": "0"}, {"error": "INTERNAL_ERROR", "data": {"message": "x"}})
CREATED = {"jobId": "job_1", "status": "QUEUED", "maxRetries": 3}


@pytest.fixture()
def scripted() -> Iterator[Any]:
    servers: list[Scripted] = []

    def start(*script: tuple[int, dict[str, str], Any]) -> Scripted:
        servers.append(Scripted(list(script)))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_idempotent_calls_are_retried_after_5xx_and_429(scripted):
    rate_limited = (429, {"Retry-After": "0"}, {"error": "RATE_LIMITED", "data": {"message": "x"}})
    server = scripted(UNAVAILABLE, rate_limited, (200, {}, USAGE))
    with Dispatched("k", base_url=server.url, max_retries=2) as client:
        assert client.usage().plan == "free"
    assert len(server.requests) == 3

    server = scripted(UNAVAILABLE, UNAVAILABLE, UNAVAILABLE)
    with Dispatched("k", base_url=server.url, max_retries=2) as client, pytest.raises(APIError):
        client.usage()
    assert len(server.requests) == 3  # the first send and 2 retries

    server = scripted(UNAVAILABLE)
    with Dispatched("k", base_url=server.url, max_retries=0) as client, pytest.raises(APIError):
        client.usage()
    assert len(server.requests) == 1


def test_dispatch_is_retried_only_with_an_idempotency_key(scripted):
    server = scripted(UNAVAILABLE)
    with Dispatched("k", base_url=server.url) as client, pytest.raises(APIError) as exc:
        client.jobs.dispatch({"a": 1})
    assert exc.value.status == 503 and len(server.requests) == 1  # never sent twice

    server = scripted(UNAVAILABLE, (201, {}, CREATED))
    with Dispatched("k", base_url=server.url) as client:
        assert client.jobs.dispatch({"a": 1}, idempotency_key="k-1").job_id == "job_1"
    assert [r[2]["Idempotency-Key"] for r in server.requests] == ["k-1", "k-1"]

    server = scripted(UNAVAILABLE, (201, {}, CREATED))
    with Dispatched("k", base_url=server.url, auto_idempotency_keys=True) as client:
        client.jobs.dispatch({"a": 1})
    keys = [r[2]["Idempotency-Key"] for r in server.requests]
    assert len(keys) == 2 and keys[0] == keys[1] and keys[0].startswith("sdk_")

    server = scripted(UNAVAILABLE)  # a replay counts toward the quota: never repeated
    with Dispatched("k", base_url=server.url) as client, pytest.raises(APIError):
        client.jobs.replay("job_1")
    assert len(server.requests) == 1


def test_a_long_retry_after_is_not_waited_for(scripted):
    rate_limited = (429, {"Retry-After": "30"}, {"error": "RATE_LIMITED", "data": {"message": "x"}})
    server = scripted(rate_limited)
    client = Dispatched("k", base_url=server.url, max_retry_wait=5)
    with client, pytest.raises(RateLimited) as exc:
        client.usage()
    assert exc.value.retry_after == 30 and len(server.requests) == 1


def test_non_json_error_answers_still_raise_api_errors(scripted):
    server = scripted((502, {}, "<html>bad gateway</html>"))
    client = Dispatched("k", base_url=server.url, max_retries=0)
    with client, pytest.raises(APIError) as exc:
        client.usage()
    assert exc.value.status == 502 and exc.value.code == "HTTP_502"


def test_async_client_retries_too(scripted):
    server = scripted(UNAVAILABLE, (200, {}, USAGE))

    async def scenario() -> str:
        async with AsyncDispatched("k", base_url=server.url) as client:
            return (await client.usage()).plan

    assert run_async(scenario) == "free" and len(server.requests) == 2
