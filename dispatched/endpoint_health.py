"""Endpoint health (DESIGN.md §12): pause a project's failing endpoint, probe it, resume it.

Every concluded attempt counts here (``record``, in the concluding transaction): a failure
extends the project's run of failed attempts (in the order they finished), a success ends it.
When the run reaches ``ENDPOINT_PAUSE_AFTER_FAILURES`` and spans at least
``ENDPOINT_PAUSE_AFTER_HOURS`` (0 = as soon as the count is reached), the endpoint is
**paused**: the release of attempts (``flow.budget``) holds the project's due attempts QUEUED,
without spending their retries, except one real due attempt every ``ENDPOINT_PROBE_INTERVAL``
seconds (10 min by default), the probe. A success (the probe, or an attempt still in flight when
the pause began) resumes the endpoint; so do ``POST /api/project/resume`` and the dashboard's
Resume button (``resume``). After a resume the project starts at parallelism 1, doubling per
success up to its setting (``flow.after_results``, slow start). Changing the webhook URL starts
the count afresh but does not resume (``reset_failures``).

The state lives on the project's ``project_flow`` row: ``endpoint_paused_at``,
``endpoint_pause_reason``, ``endpoint_probe_at``, ``endpoint_failures``,
``endpoint_failing_since``, ``slow_start``. A worker lost mid-attempt says nothing about the
endpoint and is not counted.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask import current_app

from . import clock, flow
from .extensions import db
from .models import ProjectFlow
from .outbound import Result

logger = logging.getLogger(__name__)

flow_table = ProjectFlow.__table__
#: Longest last error quoted in a pause reason.
REASON_ERROR_CHARS = 300


@dataclass(frozen=True)
class EndpointState:
    """What the API and the dashboard show about a project's endpoint."""

    #: The endpoint is paused since then (None: active).
    paused_at: datetime | None
    reason: str | None
    #: Failed attempts in a row now, and since when.
    failures: int
    failing_since: datetime | None
    #: While paused: the next probe is not released before this.
    probe_at: datetime | None
    #: After a resume: parallelism is still climbing back to its setting.
    slow_start: bool

    @property
    def paused(self) -> bool:
        return self.paused_at is not None

    def to_dict(self) -> dict[str, Any]:
        """The ``endpoint`` object of ``GET /api/project``."""
        return {
            "state": "paused" if self.paused else "active",
            "reason": self.reason,
            "since": clock.isoformat(self.paused_at),
        }


ACTIVE = EndpointState(None, None, 0, None, None, False)


def state(project_id: int) -> EndpointState:
    """Return the project's endpoint state (active when it has no flow row yet)."""
    row = db.session.execute(
        sa.select(
            flow_table.c.endpoint_paused_at,
            flow_table.c.endpoint_pause_reason,
            flow_table.c.endpoint_failures,
            flow_table.c.endpoint_failing_since,
            flow_table.c.endpoint_probe_at,
            flow_table.c.slow_start,
        ).where(flow_table.c.project_id == project_id)
    ).first()
    if row is None:
        return ACTIVE
    return EndpointState(row[0], row[1], row[2] or 0, row[3], row[4], bool(row[5]))


def _resumed() -> dict[str, Any]:
    """The columns of a resumed endpoint: no pause, no failures, slow start from 1, and the
    release loop looks at its held attempts at once."""
    return dict(
        endpoint_paused_at=None,
        endpoint_pause_reason=None,
        endpoint_probe_at=None,
        endpoint_failures=0,
        endpoint_failing_since=None,
        effective=1,
        streak=0,
        slow_start=True,
        waiting=True,
        wake_at=None,
    )


def _pause_reason(failures: int, since: datetime | None, last_error: str | None) -> str:
    error = (last_error or "unknown error")[:REASON_ERROR_CHARS]
    return (
        f"{failures} failed attempts in a row since {clock.isoformat(since)}; last error: {error}"
    )


def _runs(results: list[tuple[int, Result]]) -> dict[int, list[Result]]:
    """Each project's results in the order they finished; a lost worker is not counted."""
    by_project: dict[int, list[Result]] = defaultdict(list)
    for project_id, result in results:
        if result.outcome != "worker_lost":  # the worker died, not the endpoint
            by_project[project_id].append(result)
    return by_project


def failing_among(project_ids: Iterable[int]) -> set[int]:
    """Those of the projects with a run of failures or a paused endpoint (one read, no lock)."""
    ids = list(project_ids)
    if not ids:
        return set()
    return set(
        db.session.execute(
            sa.select(flow_table.c.project_id).where(
                flow_table.c.project_id.in_(ids),
                sa.or_(
                    flow_table.c.endpoint_failures > 0,
                    flow_table.c.endpoint_paused_at.is_not(None),
                ),
            )
        ).scalars()
    )


def touched(results: list[tuple[int, Result]], failing: set[int]) -> set[int]:
    """The projects whose endpoint-health columns these results change: those with a failure,
    and those with a success that end a run or a pause (``failing``, see ``failing_among``)."""
    return {
        pid for pid, outs in _runs(results).items() if pid in failing or not all(r.ok for r in outs)
    }


def record(results: list[tuple[int, Result]], now: datetime) -> set[int]:
    """Count concluded attempts ``(project id, result)``, in the order they finished, toward
    each project's run of failures: pause an endpoint whose run is long enough, resume one that
    answered 2xx. Runs in the caller's (concluding) transaction; returns the projects resumed.

    The common case, every endpoint answering 2xx with no failures before, costs one read and
    no write."""
    runs = _runs(results)
    succeeded = [pid for pid, outs in runs.items() if any(r.ok for r in outs)]
    return record_locked(results, failing_among(succeeded), None, now)


def record_locked(
    results: list[tuple[int, Result]],
    failing: set[int],
    states: dict[int, flow.State] | None,
    now: datetime,
) -> set[int]:
    """``record`` for a caller that read ``failing`` (``failing_among`` of the projects, e.g.
    with their other flow flags) and locked the ``touched`` projects' flow rows: ``states``
    (their state as locked) is updated in place with the pauses and resumes, so a release in the
    same transaction sees them. Returns the projects resumed."""
    resumed: set[int] = set()
    for project_id, outs in sorted(_runs(results).items()):
        last_ok = max((i for i, r in enumerate(outs) if r.ok), default=-1)
        if last_ok >= 0 and project_id in failing and _resume_after_success(project_id):
            resumed.add(project_id)
            if states is not None and project_id in states:
                states[project_id] = replace(
                    states[project_id],
                    endpoint_paused_at=None,
                    probe_at=None,
                    effective=1,
                    streak=0,
                    slow_start=True,
                )
        tail = outs[last_ok + 1 :]
        if tail:
            change = _after_failures(project_id, len(tail), tail[-1].error, now)
            if change and states is not None and project_id in states:
                states[project_id] = replace(states[project_id], **change)
    return resumed


def _resume_after_success(project_id: int) -> bool:
    """A 2xx ends the run of failures, and resumes a paused endpoint; True if it resumed."""
    resumed = db.session.execute(
        sa.update(flow_table)
        .where(
            flow_table.c.project_id == project_id,
            flow_table.c.endpoint_paused_at.is_not(None),
        )
        .values(**_resumed())
    ).rowcount
    if resumed:
        logger.warning("endpoint of project %d resumed: an attempt succeeded", project_id)
        return True
    db.session.execute(
        sa.update(flow_table)
        .where(flow_table.c.project_id == project_id)
        .values(endpoint_failures=0, endpoint_failing_since=None)
    )
    return False


def _after_failures(
    project_id: int, count: int, last_error: str | None, now: datetime
) -> dict[str, Any] | None:
    """Extend the project's run by ``count`` failures; pause it when the run is long enough, or
    put off the next probe when it is paused already. Returns the flow-state fields changed."""
    config = current_app.config
    row = db.session.execute(
        sa.update(flow_table)
        .where(flow_table.c.project_id == project_id)
        .values(
            endpoint_failures=flow_table.c.endpoint_failures + count,
            endpoint_failing_since=sa.func.coalesce(flow_table.c.endpoint_failing_since, now),
        )
        .returning(
            flow_table.c.endpoint_failures,
            flow_table.c.endpoint_failing_since,
            flow_table.c.endpoint_paused_at,
        )
    ).first()
    if row is None:
        return None  # no flow row: the project was deleted meanwhile
    failures, since, paused_at = row
    probe_at = now + timedelta(seconds=config["ENDPOINT_PROBE_INTERVAL"])
    if paused_at is not None:
        # A failed probe (or an attempt in flight when the pause began): probe again later.
        db.session.execute(
            sa.update(flow_table)
            .where(flow_table.c.project_id == project_id)
            .values(endpoint_probe_at=probe_at)
        )
        return {"probe_at": probe_at}
    span = timedelta(hours=config["ENDPOINT_PAUSE_AFTER_HOURS"])
    if failures < config["ENDPOINT_PAUSE_AFTER_FAILURES"] or since is None or now - since < span:
        return None
    reason = _pause_reason(failures, since, last_error)
    db.session.execute(
        sa.update(flow_table)
        .where(flow_table.c.project_id == project_id)
        .values(endpoint_paused_at=now, endpoint_pause_reason=reason, endpoint_probe_at=probe_at)
    )
    logger.warning("endpoint of project %d paused: %s", project_id, reason)
    return {"endpoint_paused_at": now, "probe_at": probe_at}


def resume(project_id: int) -> bool:
    """Resume the project's paused endpoint (slow start) and commit; False if it was not
    paused (nothing changes then)."""
    try:
        changed = db.session.execute(
            sa.update(flow_table)
            .where(
                flow_table.c.project_id == project_id,
                flow_table.c.endpoint_paused_at.is_not(None),
            )
            .values(**_resumed())
        ).rowcount
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    if changed:
        logger.warning("endpoint of project %d resumed by a user", project_id)
    return changed == 1


def reset_failures(project_id: int) -> None:
    """Start the run of failures afresh (the webhook URL changed); a pause stays. The caller
    commits."""
    db.session.execute(
        sa.update(flow_table)
        .where(flow_table.c.project_id == project_id)
        .values(endpoint_failures=0, endpoint_failing_since=None)
    )
