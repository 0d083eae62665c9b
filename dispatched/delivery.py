"""The delivery tasks run by RQ workers: hand released attempts to the process's engine.

Enqueued by dotted name by the transport backend (``transport_rq``); they take ids, never ORM
objects. The engine claims the attempts (one transaction), sends them on its threads and
records the results; every state change goes through ``jobs``.
"""

from __future__ import annotations

from . import engine


def _engine() -> engine.DeliveryEngine:
    running = engine.current()
    if running is None:
        raise RuntimeError(
            "no delivery engine in this process: run deliveries with `python worker.py` or "
            "`rq worker -w dispatched.rq_worker.DeliveryWorker`"
        )
    return running


def deliver_batch(holder: str | None, attempts: list[list]) -> int:  # type: ignore[type-arg]
    """Start the released ``attempts`` (``[job_id, attempt]`` pairs) ``holder`` handed over;
    return how many were claimed (the rest were cancelled or re-released meanwhile)."""
    refs = [(str(job_id), int(attempt)) for job_id, attempt in attempts]
    return _engine().run(holder, refs)


def deliver_due(project_ids: list[int]) -> int:
    """Pull the projects' attempts due now into this process (``jobs.pull``; enqueued when a
    job is dispatched for now); return how many were started (the rest, if any, are left to
    the release loop)."""
    return _engine().pull([int(project_id) for project_id in project_ids])


def deliver_test_event(project_id: int, event_id: str) -> bool:
    """Send a dashboard test event (``test_events``) on the engine's threads; return whether
    it was sent (not when it expired or was taken already)."""
    return _engine().send_test_event(int(project_id), str(event_id))


def deliver_callbacks(callback_ids: list[str]) -> int:
    """Send due callbacks (DESIGN.md §11) on the engine's threads; return how many were claimed
    (the rest were sent by another worker meanwhile)."""
    return _engine().run_callbacks([str(callback_id) for callback_id in callback_ids])


def deliver(job_id: str, attempt: int) -> int:
    """An attempt enqueued by an older version (one RQ job per attempt, no holder)."""
    return deliver_batch(None, [[job_id, attempt]])
