"""The job service: every status change of a job happens in this package (DESIGN.md §4).

- ``transitions``: the table of allowed status changes and the one compare-and-set helper;
- ``queries``: reading jobs, pages and attempt logs;
- ``intake``: accepting jobs, one or a batch (idempotency, quota, insert, hand-off);
- ``actions``: what users do (cancel, reschedule, replay);
- ``handoff``: handing attempts to the transport, and the release loop's decision;
- ``release``: releasing due attempts under each project's flow control;
- ``attempts``: claiming, pulling and concluding batches of attempts;
- ``recovery``: failing over attempts whose worker died, handing back stranded ones.

Callers use the names re-exported here (``jobs.create``, ``jobs.cancel``, …).
"""

from __future__ import annotations

from .actions import cancel, replay, reschedule
from .attempts import (
    MAX_EARLY_SECONDS,
    Delivery,
    Finished,
    claim,
    conclude,
    conclude_and_continue,
    pull,
)
from .handoff import clear_handoff_flag, mark_dispatched, on_tick, rehand
from .intake import Outcome, create, create_many
from .queries import attempts_of, get, list_jobs
from .recovery import fail_over_lost, hand_back_dispatched
from .release import release
from .transitions import TRANSITIONS, InvalidTransition

__all__ = [
    "MAX_EARLY_SECONDS",
    "TRANSITIONS",
    "Delivery",
    "Finished",
    "InvalidTransition",
    "Outcome",
    "attempts_of",
    "cancel",
    "claim",
    "clear_handoff_flag",
    "conclude",
    "conclude_and_continue",
    "create",
    "create_many",
    "fail_over_lost",
    "get",
    "hand_back_dispatched",
    "list_jobs",
    "mark_dispatched",
    "on_tick",
    "pull",
    "rehand",
    "release",
    "replay",
    "reschedule",
]
