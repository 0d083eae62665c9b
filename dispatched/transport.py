"""The transport seam: how attempts travel from the database to delivery workers.

Services (``jobs``, the reconciler, metrics) call only the functions below; which engine
carries the attempts is configuration (``TRANSPORT_BACKEND``, a key of ``BACKENDS``). The one
backend today is ``rq-scheduler`` (``transport_rq``): rq-scheduler's sorted set times the
attempts, its lock keeps one release loop active, and RQ queues carry released attempts to the
worker nodes. Swapping it for RQ's built-in scheduler means one new module implementing these
functions, one ``BACKENDS`` entry and the setting; callers do not change.

An attempt is named by ``(job_id, attempt_number)``. The database stays the source of truth:
every function may raise ``TransportUnavailable``, and callers leave the job in SQL for the
reconciler when it does.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import ModuleType
from typing import Any

from flask import current_app

from .errors import TransportUnavailable

__all__ = ["TransportUnavailable"]  # re-exported: callers catch transport.TransportUnavailable

#: An attempt: ``(job_id, attempt_number)``.
AttemptRef = tuple[str, int]
#: Attempts handed to one worker, under a holder name (``rq:<RQ job id>`` or None).
Group = tuple[str | None, list[AttemptRef]]

BACKENDS = {"rq-scheduler": "dispatched.transport_rq"}


@dataclass
class Tick:
    """What the job service decided in one pass of the release loop."""

    #: Due scheduled attempts: True = taken (released, or left waiting in SQL), False = drop
    #: (cancelled or superseded), a datetime = keep it scheduled, for then.
    decisions: dict[AttemptRef, bool | datetime] = field(default_factory=dict)
    #: Released attempts to hand to the workers.
    groups: list[Group] = field(default_factory=list)
    #: When the loop must look again at the latest (a project's pause or rate).
    next_wake: datetime | None = None


#: The release decision the loop calls: (due scheduled attempts, woken project ids) → Tick.
OnTick = Callable[[list[AttemptRef], set[int]], Tick]


def backend() -> ModuleType:
    """Return the configured backend module."""
    name = current_app.config.get("TRANSPORT_BACKEND", "rq-scheduler")
    try:
        return importlib.import_module(BACKENDS[name])
    except KeyError:
        raise RuntimeError(
            f"TRANSPORT_BACKEND {name!r} is not one of {', '.join(BACKENDS)}"
        ) from None


def hand_over(groups: list[Group], timeout: int) -> None:
    """Give released attempts to the delivery workers (one worker per group)."""
    if groups:
        backend().hand_over(groups, timeout)


def enqueue_now(job_id: str, attempt: int, timeout: int) -> None:
    """Hand one DISPATCHED attempt (with no holder) to the workers: repair and tests."""
    hand_over([(None, [(job_id, attempt)])], timeout)


def send_test_event(project_id: int, event_id: str, queue_ttl: int) -> None:
    """Have a delivery worker send the project's dashboard test event (``test_events``);
    dropped if no worker takes it within ``queue_ttl`` seconds."""
    backend().send_test_event(project_id, event_id, queue_ttl)


def send_callbacks(callback_ids: list[str]) -> None:
    """Have one delivery worker send these due callbacks (``callbacks``)."""
    if callback_ids:
        backend().send_callbacks(callback_ids)


def wake(project_id: int) -> None:
    """Tell the release loop the project has an attempt due now."""
    backend().wake(project_id)


def admit(
    due: Collection[int],
    timed: Sequence[tuple[AttemptRef, datetime]],
    also: Callable[[Any], None] | None = None,
) -> None:
    """Hand newly accepted attempts over: have a worker pull the attempts due now of the
    projects in ``due`` (one pending pull per project; ``due_taken`` ends it), and register
    each timed attempt for its time. One round trip, two when a pull must be queued.

    ``also`` may add commands of its own to the same pipeline (the metrics counters).
    """
    if due or timed or also:
        backend().admit(due, timed, also)


def due_taken(project_ids: Collection[int]) -> None:
    """A worker is pulling these projects' due attempts now: the next ``admit`` of one of them
    queues a new pull (so nothing committed after this call waits for the release loop)."""
    if project_ids:
        backend().due_taken(project_ids)


def schedule_at(job_id: str, attempt: int, when: datetime, timeout: int) -> None:
    """Have the release loop offer the attempt at ``when`` (never before)."""
    backend().schedule_at(job_id, attempt, when, timeout)


def unschedule(job_id: str, attempt: int) -> None:
    """Forget the attempt wherever the transport holds it (scheduled or queued)."""
    backend().unschedule(job_id, attempt)


def scheduled_time(job_id: str, attempt: int) -> float | None:
    """Unix time the attempt is scheduled for, or None if it is not scheduled."""
    return backend().scheduled_time(job_id, attempt)


def held(attempts: list[AttemptRef]) -> set[AttemptRef]:
    """Return which of ``attempts`` are scheduled in the transport."""
    return backend().held(attempts) if attempts else set()


def live_holders(holders: list[str]) -> set[str]:
    """Return which hand-over holders (``rq:…``) are still waiting for or inside a worker."""
    return backend().live_holders(holders) if holders else set()


def depth() -> dict[str, int]:
    """Attempts in the transport: queued, scheduled for later, being worked on."""
    return backend().depth()


def ping() -> None:
    """Raise TransportUnavailable unless the transport answers."""
    backend().ping()


def run_scheduler(on_tick: OnTick, interval: float, burst: bool = False) -> None:
    """Run the release loop in this process until stopped."""
    backend().run_scheduler(on_tick, interval, burst=burst)
