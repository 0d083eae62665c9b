"""Test events from the dashboard: sent by the delivery workers, their answer kept briefly.

"Send test event" never POSTs inside a web request (a slow receiver would hold a web thread
for the whole delivery timeout): ``start`` keeps the event as waiting and hands it to the
workers through the transport; a worker's engine takes it (``prepare``: signed like a delivery
by ``webhooks.test_event_request``), POSTs it on its threads with the plan's delivery timeout
and ``record``s the answer; the webhook page polls ``get``. Nothing goes to SQL: the
status is a Redis key that expires after ``KEEP`` seconds. Each project may start
``RATE_LIMIT`` test events.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import limits
from limits.errors import StorageError
from redis.exceptions import RedisError

from . import plans, redis_client, transport, webhooks
from .errors import BadRequest, ServiceError, ServiceUnavailable, TransportUnavailable
from .extensions import db, limiter
from .ids import new_id
from .models import Project
from .outbound import CONNECT_TIMEOUT, Result

logger = logging.getLogger(__name__)

#: Seconds a test event's status (and its answer) is kept.
KEEP = 600
#: Seconds a test event may wait for a worker; later it is dropped, not sent stale.
QUEUE_TTL = 60
#: Test events one project may start (Flask-Limiter's storage and strategy).
RATE_LIMIT = "6 per minute"
#: A test event still "sending" this long after its delivery timeout was lost with its worker.
LOST_GRACE = 30

WAITING, SENDING, DONE, NOT_SENT = "waiting", "sending", "done", "not_sent"


class RateLimited(ServiceError):
    code = "RATE_LIMITED"


@dataclass(frozen=True)
class Status:
    """What the webhook page shows about one test event."""

    id: str
    project_id: int
    #: waiting (for a worker) | sending | done (``result`` holds the answer) | not_sent
    state: str
    queued_at: float
    timeout: int
    started_at: float | None = None
    result: Result | None = None
    #: Why a ``not_sent`` event was not sent.
    reason: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in (DONE, NOT_SENT)

    @property
    def waited(self) -> int:
        """Whole seconds since the event was queued."""
        return int(time.time() - self.queued_at)


@dataclass(frozen=True)
class Outgoing:
    """A signed test event ready for a worker thread (no ORM objects)."""

    event_id: str
    project_id: int
    url: str
    body: bytes
    headers: dict[str, str]
    timeout: int


def _key(project_id: int, event_id: str) -> str:
    return f"dispatched:test-event:{project_id}:{event_id}"


def _save(project_id: int, event_id: str, fields: dict[str, Any]) -> None:
    redis_client.connection().set(_key(project_id, event_id), json.dumps(fields), ex=KEEP)


def _load(project_id: int, event_id: str) -> dict[str, Any] | None:
    raw = redis_client.connection().get(_key(project_id, event_id))
    return json.loads(raw) if raw else None


def _check_rate(project_id: int) -> None:
    """Count one test event of the project; raise RateLimited beyond RATE_LIMIT."""
    item = limits.parse(RATE_LIMIT)
    if limiter.limiter.hit(item, "test-event", str(project_id)):
        return
    reset = limiter.limiter.get_window_stats(item, "test-event", str(project_id)).reset_time
    wait = max(1, math.ceil(reset - time.time()))
    exc = RateLimited(
        f"Too many test events: each project may send {item.amount} a "
        f"{item.GRANULARITY.name}. Try again in {wait} s."
    )
    exc.headers["Retry-After"] = str(wait)
    raise exc


def start(project: Project) -> Status:
    """Queue a test event to the project's webhook; return it (waiting for a worker).

    Raises:
        BadRequest: the project has no webhook URL.
        RateLimited: the project sent RATE_LIMIT test events already.
        ServiceUnavailable: Redis is unreachable (nothing was queued).
    """
    if not project.webhook_url:
        raise BadRequest("Set a webhook URL first: a test event needs somewhere to go.")
    event_id = new_id("test")
    timeout = plans.of_project(project.id).delivery_timeout
    queued_at = time.time()
    try:
        _check_rate(project.id)
        _save(project.id, event_id, {"state": WAITING, "queuedAt": queued_at, "timeout": timeout})
        transport.send_test_event(project.id, event_id, QUEUE_TTL)
    except (RedisError, StorageError, TransportUnavailable) as exc:
        logger.warning("test event of project %d not queued: %s", project.id, exc)
        raise ServiceUnavailable("Could not queue the test event (Redis is unreachable).") from exc
    return Status(event_id, project.id, WAITING, queued_at, timeout)


def get(project_id: int, event_id: str) -> Status | None:
    """Return the project's test event ``event_id`` (None if unknown or expired).

    An event no worker took within QUEUE_TTL, or still sending well past its timeout (its
    worker died), reads as ``not_sent``, so the page stops waiting for it.
    """
    try:
        fields = _load(project_id, event_id)
    except RedisError as exc:
        logger.warning("test event %s not read: %s", event_id, exc)
        raise ServiceUnavailable("Could not read the test event (Redis is unreachable).") from exc
    if fields is None:
        return None
    state, reason = fields["state"], fields.get("reason")
    now = time.time()
    timeout = int(fields["timeout"])
    if state == WAITING and now - fields["queuedAt"] > QUEUE_TTL + 5:
        state = NOT_SENT
        reason = f"no delivery worker took it within {QUEUE_TTL} s; is the worker process running?"
    elif state == SENDING and now - fields["startedAt"] > CONNECT_TIMEOUT + timeout + LOST_GRACE:
        state = NOT_SENT
        reason = "the worker sending it stopped before the receiver answered"
    result = Result(**fields["result"]) if fields.get("result") else None
    return Status(
        event_id,
        project_id,
        state,
        fields["queuedAt"],
        timeout,
        fields.get("startedAt"),
        result,
        reason,
    )


def prepare(project_id: int, event_id: str) -> Outgoing | None:
    """Sign the waiting test event for sending (a worker, in its app context) and mark it
    sending; None when it must not be sent (expired, taken already, or no URL any more)."""
    fields = _load(project_id, event_id)
    if fields is None or fields["state"] != WAITING:
        logger.info("test event %s of project %s: gone or taken, not sent", event_id, project_id)
        return None
    if time.time() - fields["queuedAt"] > QUEUE_TTL:
        fields.update(state=NOT_SENT, reason=f"it waited more than {QUEUE_TTL} s for a worker")
        _save(project_id, event_id, fields)
        return None
    project = db.session.get(Project, project_id)
    if project is None or not project.webhook_url:
        fields.update(state=DONE, result=_as_dict(Result("error", 0, error="no webhook URL")))
        _save(project_id, event_id, fields)
        return None
    timeout = plans.of_project(project_id).delivery_timeout
    body, headers = webhooks.test_event_request(project, event_id)
    fields.update(state=SENDING, startedAt=time.time(), timeout=timeout)
    _save(project_id, event_id, fields)
    return Outgoing(event_id, project_id, project.webhook_url, body, headers, timeout)


def record(project_id: int, event_id: str, result: Result) -> None:
    """Keep the receiver's answer to the test event (for KEEP seconds)."""
    fields = _load(project_id, event_id) or {"queuedAt": time.time(), "timeout": 0}
    fields.update(state=DONE, result=_as_dict(result))
    _save(project_id, event_id, fields)


def _as_dict(result: Result) -> dict[str, Any]:
    return {
        "outcome": result.outcome,
        "duration_ms": result.duration_ms,
        "http_status": result.http_status,
        "excerpt": result.excerpt,
        "error": result.error,
    }
