"""The job service: every status change of a job happens in this package (DESIGN.md §4).

- ``transitions``: the table of allowed status changes and the one compare-and-set helper;
- ``queries``: reading jobs, pages and attempt logs;
- ``intake``: accepting a job (quota, idempotency, insert, hand-off);
- ``actions``: what users do (cancel, reschedule, replay);
- ``handoff``: handing attempts to the transport and releasing due ones;
- ``attempts``: starting and concluding a delivery attempt, failing over lost workers.

Callers use the names re-exported here (``jobs.create``, ``jobs.cancel``, …).
"""

from __future__ import annotations

from .actions import cancel, replay, reschedule
from .attempts import MAX_EARLY_SECONDS, Delivery, fail_over_lost, finish_attempt, start_attempt
from .handoff import mark_dispatched, on_due, rehand
from .intake import create
from .queries import attempts_of, get, list_jobs
from .transitions import TRANSITIONS, InvalidTransition

__all__ = [
    "MAX_EARLY_SECONDS",
    "TRANSITIONS",
    "Delivery",
    "InvalidTransition",
    "attempts_of",
    "cancel",
    "create",
    "fail_over_lost",
    "finish_attempt",
    "get",
    "list_jobs",
    "mark_dispatched",
    "on_due",
    "rehand",
    "replay",
    "reschedule",
    "start_attempt",
]
