"""The transport seam: how a job's attempts travel from the database to a delivery worker.

Services (``jobs``, the reconciler, metrics) call only the functions below; which engine
carries the attempts is configuration (``TRANSPORT_BACKEND``, a key of ``BACKENDS``). The one
backend today is ``rq-scheduler`` (``transport_rq``): RQ queues between nodes, rq-scheduler for
timed release. Swapping it for RQ's built-in scheduler means one new module implementing these
functions, one ``BACKENDS`` entry and the setting; callers do not change.

An attempt is named by ``(job_id, attempt_number)``. The database stays the source of truth:
every function may raise ``TransportUnavailable`` and callers leave the job in SQL for the
reconciler when it does.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from datetime import datetime
from types import ModuleType

from flask import current_app

from .errors import TransportUnavailable

__all__ = ["TransportUnavailable"]  # re-exported: callers catch transport.TransportUnavailable

#: An attempt: ``(job_id, attempt_number)``.
AttemptRef = tuple[str, int]
#: What the job service decides for a due attempt: True = released (QUEUED → DISPATCHED made,
#: hand it to a worker), False = drop it, a datetime = hold it until then.
Decision = bool | datetime
OnDue = Callable[[list[AttemptRef]], dict[AttemptRef, Decision]]

BACKENDS = {"rq-scheduler": "dispatched.transport_rq"}


def backend() -> ModuleType:
    """Return the configured backend module."""
    name = current_app.config.get("TRANSPORT_BACKEND", "rq-scheduler")
    try:
        return importlib.import_module(BACKENDS[name])
    except KeyError:
        raise RuntimeError(
            f"TRANSPORT_BACKEND {name!r} is not one of {', '.join(BACKENDS)}"
        ) from None


def enqueue_now(job_id: str, attempt: int, timeout: int) -> None:
    """Hand attempt ``attempt`` of ``job_id`` to the delivery workers now."""
    backend().enqueue_now(job_id, attempt, timeout)


def schedule_at(job_id: str, attempt: int, when: datetime, timeout: int) -> None:
    """Have the scheduler offer the attempt to ``on_due`` at ``when`` (never before)."""
    backend().schedule_at(job_id, attempt, when, timeout)


def unschedule(job_id: str, attempt: int) -> None:
    """Forget the attempt wherever the transport holds it (scheduled or queued)."""
    backend().unschedule(job_id, attempt)


def scheduled_time(job_id: str, attempt: int) -> float | None:
    """Unix time the attempt is scheduled for, or None if it is not scheduled."""
    return backend().scheduled_time(job_id, attempt)


def held(attempts: list[AttemptRef]) -> set[AttemptRef]:
    """Return which of ``attempts`` the transport holds (scheduled, queued or being worked)."""
    return backend().held(attempts) if attempts else set()


def depth() -> dict[str, int]:
    """Attempts in the transport: queued, scheduled for later, being worked on."""
    return backend().depth()


def ping() -> None:
    """Raise TransportUnavailable unless the transport answers."""
    backend().ping()


def run_scheduler(on_due: OnDue, interval: float, burst: bool = False) -> None:
    """Run the release loop in this process: offer due attempts to ``on_due`` every tick."""
    backend().run_scheduler(on_due, interval, burst=burst)
