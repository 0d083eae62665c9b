"""Releasing due attempts (QUEUED → DISPATCHED) under each project's flow control.

Every release of a project's attempts starts by locking its ``project_flow`` row (an UPDATE,
which also takes SQLite's write lock), counts what is in flight, and releases the oldest due
attempts the budget allows (``flow.budget``). Projects are locked in id order, so two releasers
(the scheduler and a worker releasing the next attempt after a delivery) never deadlock.
Whatever stays due is marked ``waiting`` on the flow row; the scheduler retries waiting
projects every tick (and at ``wake_at`` for a pause or the rate), and a worker finishing a
delivery of the project releases the next one at once (work-conserving).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from .. import clock, flow, plans, workers
from ..extensions import db
from ..models import Job, Project, ProjectFlow
from ..outbound import Result
from .transitions import S, move_many

flow_table = ProjectFlow.__table__
jobs_table = Job.__table__
projects_table = Project.__table__
#: Most attempts per RQ job handed to the workers (one RQ job = one claim transaction).
HAND_OVER_BATCH = 8
#: A release of few attempts is split over up to this many RQ jobs, so idle worker processes
#: share it instead of one process taking it all.
SPREAD = 8

Ref = tuple[str, int]


@dataclass
class Released:
    """The result of one release pass."""

    #: ``(holder, [(job_id, attempt), ...])``: each group goes to one worker.
    groups: list[tuple[str, list[Ref]]] = field(default_factory=list)
    #: Earliest time a waiting project may release again because of a pause or its rate.
    next_wake: datetime | None = None
    #: Projects left with due attempts waiting for a slot (flagged ``waiting`` in SQL).
    waiting: set[int] = field(default_factory=set)

    @property
    def refs(self) -> list[Ref]:
        return [ref for _, refs in self.groups for ref in refs]


def lock_flow(project_id: int) -> flow.State:
    """Lock the project's flow row for this transaction and return its state (creating it)."""
    for _ in range(2):
        row = db.session.execute(_lock_statement(), {"pid": project_id}).first()
        if row is not None:
            return flow.State(*row)
        try:
            with db.session.begin_nested():
                db.session.execute(
                    sa.insert(flow_table).values(
                        project_id=project_id, streak=0, tokens=1.0, waiting=False, version=0
                    )
                )
        except IntegrityError:
            pass  # another releaser created it: lock it on the next turn
    raise RuntimeError(f"project {project_id} has no flow row and none could be made")


# The engine's hot statements are built once, with bind parameters (``functools.cache``): for a
# statement run per delivery, building it and computing its cache key cost about as much CPU as
# executing it (bench/README, sixth look).


@functools.cache
def _lock_statement() -> sa.Update:
    return (
        sa.update(flow_table)
        .where(flow_table.c.project_id == sa.bindparam("pid"))
        .values(version=flow_table.c.version + 1)
        .returning(
            flow_table.c.effective,
            flow_table.c.streak,
            flow_table.c.paused_until,
            flow_table.c.tokens,
            flow_table.c.tokens_at,
            # Endpoint health (DESIGN.md §12; ``endpoint_health``).
            flow_table.c.endpoint_paused_at,
            flow_table.c.endpoint_probe_at,
            flow_table.c.slow_start,
        )
    )


#: The flow row's columns that ``save_flow`` writes from the state (same names on
#: ``flow.State``; ``slow_start`` is endpoint health's, DESIGN.md §12).
STATE_COLUMNS = ("effective", "streak", "paused_until", "tokens", "tokens_at", "slow_start")


def save_flow(project_id: int, state: flow.State, **values: object) -> None:
    """Write the project's flow state, and ``values`` (other flow columns, e.g. ``waiting``)."""
    if clash := values.keys() & set(STATE_COLUMNS):
        raise TypeError(f"save_flow: {sorted(clash)} come from the state, not from values")
    params = {f"v_{name}": value for name, value in values.items()}
    params.update({f"v_{name}": getattr(state, name) for name in STATE_COLUMNS}, pid=project_id)
    db.session.execute(_save_statement(tuple(sorted(values))), params)


@functools.lru_cache(maxsize=16)
def _save_statement(extra: tuple[str, ...]) -> sa.Update:
    """The flow row's UPDATE, writing the state and the ``extra`` columns (``v_<name>``)."""
    names = STATE_COLUMNS + extra
    return (
        sa.update(flow_table)
        .where(flow_table.c.project_id == sa.bindparam("pid"))
        .values({name: sa.bindparam(f"v_{name}") for name in names})
    )


def settings_of(project_ids: Iterable[int]) -> dict[int, flow.Settings]:
    """Flow settings of the projects, bounded by their plans."""
    rows = db.session.execute(_settings_select(), {"ids": list(project_ids)}).all()
    return {
        row.id: flow.settings_of(row.parallelism, row.rate_per_second, plans.get(row.plan))
        for row in rows
    }


@functools.cache
def _settings_select() -> sa.Select:
    # Core columns, not ORM attributes: the ORM's compile step costs about 0.1 ms of CPU per
    # statement (bench/README, fifth look).
    project = projects_table.c
    return plans.select_with_plan(project.id, project.parallelism, project.rate_per_second).where(
        project.id.in_(sa.bindparam("ids", expanding=True))
    )


def in_flight(project_ids: Iterable[int]) -> dict[int, int]:
    """Attempts of each project that are DISPATCHED or STARTED."""
    rows = db.session.execute(_in_flight_select(), {"ids": list(project_ids)}).all()
    return dict(rows)  # type: ignore[arg-type]


@functools.cache
def _in_flight_select() -> sa.Select:
    return (
        sa.select(jobs_table.c.project_id, sa.func.count())
        .where(
            jobs_table.c.project_id.in_(sa.bindparam("ids", expanding=True)),
            jobs_table.c.status.in_([S.DISPATCHED, S.STARTED]),
        )
        .group_by(jobs_table.c.project_id)
    )


@functools.cache
def _due_select() -> sa.Select:
    """A project's oldest due attempts (``pid``, ``now``, at most ``lim``)."""
    job = jobs_table.c
    return (
        sa.select(job.id, job.attempts)
        .where(
            job.project_id == sa.bindparam("pid"),
            job.status == S.QUEUED,
            job.next_attempt_at <= sa.bindparam("now"),
        )
        .order_by(job.next_attempt_at, job.id)
        .limit(sa.bindparam("lim", type_=sa.Integer))
    )


def release(
    project_ids: Iterable[int],
    holder: Callable[[], str],
    *,
    limit: int | None = None,
    spread: int = SPREAD,
    only_waiting: bool = False,
    now: datetime | None = None,
) -> Released:
    """Release the due attempts of ``project_ids`` that their flow control allows; commit.

    ``holder()`` names each group of at most HAND_OVER_BATCH attempts (an RQ job id, or the
    worker process that keeps them); a release is split over up to ``spread`` groups (the live
    worker processes), mixing projects round-robin. ``limit`` caps the total (the workers' free
    capacity), shared fairly between the projects. ``only_waiting`` skips projects that have no
    attempt waiting for a slot (no lock, no query: the common case after a delivery).
    """
    ids = sorted(set(project_ids))
    if ids and only_waiting:
        ids = sorted(waiting_among(ids))
    if not ids:
        db.session.rollback()
        return Released()
    try:
        states = {project_id: lock_flow(project_id) for project_id in ids}
        result = release_locked(states, holder, limit=limit, spread=spread, now=now)
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    return result


def waiting_among(project_ids: Iterable[int]) -> list[int]:
    """Those of the projects that have due attempts waiting for a slot."""
    return list(
        db.session.execute(
            sa.select(flow_table.c.project_id).where(
                flow_table.c.project_id.in_(list(project_ids)), flow_table.c.waiting.is_(True)
            )
        ).scalars()
    )


def release_locked(
    states: dict[int, flow.State],
    holder: Callable[[], str],
    *,
    limit: int | None = None,
    spread: int = SPREAD,
    one_group: bool = False,
    line: int = 0,
    now: datetime | None = None,
    settings: dict[int, flow.Settings] | None = None,
) -> Released:
    """``release`` inside the caller's transaction, for projects whose flow rows it has
    locked (``states``: their state as locked, or as updated since in this transaction; the
    new state is written back into it). ``one_group``: everything goes to one holder (a worker
    releasing into itself, up to its own room), in one UPDATE. ``line``: how many places of
    ``limit`` are a worker's line (attempts next in line, waiting for a thread; see
    ``line_shares``). ``settings``: the projects' ``settings_of`` if the caller has read them
    already in this transaction."""
    result = Released()
    ids = sorted(states)
    if not ids:
        return result
    now = now or clock.utcnow()
    if settings is None or not set(ids) <= set(settings):
        settings = settings_of(ids)
    busy = in_flight(ids)
    budgets = {
        pid: flow.budget(settings[pid], states[pid], busy.get(pid, 0), now)
        for pid in ids
        if pid in settings  # not deleted meanwhile
    }
    allowed = {pid: budget for pid, (budget, _) in budgets.items()}
    shares = line_shares(allowed, limit, line) if line else fair_shares(allowed, limit)
    picked: dict[int, list[Ref]] = {}
    waits: dict[int, tuple[bool, datetime | None]] = {}
    for project_id, share in shares.items():
        rows = db.session.execute(
            _due_select(), {"pid": project_id, "now": now, "lim": share + 1}
        ).all()
        picked[project_id] = [(job_id, attempts) for job_id, attempts in rows[:share]]
        allowed, wake_at = budgets[project_id]
        # Held back by the room left, not by time: wait for room (no wake-up time).
        waits[project_id] = (len(rows) > share, wake_at if share == allowed else None)
    released_by_project: dict[int, int] = {}
    queue = [ref for refs in itertools.zip_longest(*picked.values()) for ref in refs if ref]
    project_of = {ref[0]: pid for pid, refs in picked.items() for ref in refs}
    size = min(HAND_OVER_BATCH, max(1, math.ceil(len(queue) / max(1, spread))))
    if one_group:
        size = max(1, len(queue))  # one holder keeps them all: one UPDATE
    for start in range(0, len(queue), size):
        chunk = queue[start : start + size]
        name = holder()
        moved = move_many(chunk, S.QUEUED, S.DISPATCHED, dispatched_at=now, holder=name)
        refs = [(job_id, attempts + 1) for job_id, attempts in chunk if job_id in moved]
        if refs:
            result.groups.append((name, refs))
        for job_id, _ in refs:
            pid = project_of[job_id]
            released_by_project[pid] = released_by_project.get(pid, 0) + 1
    for project_id in picked:
        state = flow.spend(
            settings[project_id],
            states[project_id],
            released_by_project.get(project_id, 0),
            now,
        )
        states[project_id] = state
        waiting, wake_at = waits[project_id]
        if waiting and wake_at is None and shares[project_id] == budgets[project_id][0]:
            # It spent its last rate token: look again when the next one comes.
            wake_at = flow.next_token_at(settings[project_id], state, now)
        save_flow(project_id, state, waiting=waiting, wake_at=wake_at if waiting else None)
        if waiting:
            result.waiting.add(project_id)
        if waiting and wake_at is not None:
            result.next_wake = min(filter(None, [result.next_wake, wake_at]))
    return result


def fair_shares(allowed: dict[int, int], limit: int | None) -> dict[int, int]:
    """Split ``limit`` between projects one attempt at a time (water-filling), so a project
    with a big budget cannot take all the room; None = no limit."""
    if limit is None or sum(allowed.values()) <= limit:
        return dict(allowed)
    shares = dict.fromkeys(allowed, 0)
    left = max(0, limit)
    while left:
        hungry = [pid for pid in allowed if shares[pid] < allowed[pid]]
        if not hungry:
            break
        for pid in hungry[:left]:
            shares[pid] += 1
        left -= min(left, len(hungry))
    return shares


def line_shares(allowed: dict[int, int], limit: int | None, line: int) -> dict[int, int]:
    """``fair_shares`` for a worker whose ``limit`` includes ``line`` places in its line: the
    free threads are shared first; a line place goes only to a project with budget left, and
    at most half of it. A project near its parallelism cap must send from idle threads, in
    this process or another, not hold its last slots claimed in a line behind busy threads
    (bench/README, eighth look: 70 idle threads in one process while the other held 64 of
    the capped project's slots in its line)."""
    threads = fair_shares(allowed, None if limit is None else max(0, limit - line))
    spare = {pid: (allowed[pid] - threads[pid]) // 2 for pid in allowed}
    lined = fair_shares(spare, line)
    return {pid: threads[pid] + lined[pid] for pid in allowed}


def room_for_hand_over() -> tuple[int | None, int]:
    """Free delivery capacity of the live worker processes (their capacity minus what is
    DISPATCHED or STARTED), and how many there are; (None, 0) when none has registered."""
    live = workers.load()
    if not live:
        return None, 0
    busy = db.session.execute(
        sa.select(sa.func.count()).where(Job.status.in_([S.DISPATCHED, S.STARTED]))
    ).scalar_one()
    return max(0, sum(capacity for _, _, capacity in live) - busy), len(live)


def waiting_projects(now: datetime) -> tuple[list[int], datetime | None]:
    """Projects whose due attempts wait and may move now; and the next pause/rate wake-up."""
    ready = list(
        db.session.execute(
            sa.select(flow_table.c.project_id).where(
                flow_table.c.waiting.is_(True),
                sa.or_(flow_table.c.wake_at.is_(None), flow_table.c.wake_at <= now),
            )
        ).scalars()
    )
    later = db.session.execute(
        sa.select(sa.func.min(flow_table.c.wake_at)).where(
            flow_table.c.waiting.is_(True), flow_table.c.wake_at > now
        )
    ).scalar()
    return ready, later


def mark_waiting(project_ids: Iterable[int]) -> None:
    """Flag projects as having due work (the scheduler will try to release it); commit."""
    ids = sorted(set(project_ids))
    if not ids:
        return
    try:
        db.session.execute(
            sa.update(flow_table).where(flow_table.c.project_id.in_(ids)).values(waiting=True)
        )
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise


def outcomes_by_project(results: list[tuple[int, Result]]) -> dict[int, list[flow.Outcome]]:
    """What each project's endpoint answered, from ``(project id, result)`` pairs."""
    by_project: dict[int, list[flow.Outcome]] = defaultdict(list)
    for project_id, result in results:
        by_project[project_id].append(
            flow.Outcome(result.ok, result.http_status, result.retry_after)
        )
    return by_project


def pressured(outcomes: dict[int, list[flow.Outcome]], throttled: set[int]) -> list[int]:
    """Projects whose flow state these outcomes change: those that saw a failure, and those
    running below their setting (``throttled``) that count successes to recover."""
    return sorted(
        pid for pid, outs in outcomes.items() if pid in throttled or not all(o.ok for o in outs)
    )


def flow_flags(project_ids: Iterable[int]) -> tuple[set[int], set[int], set[int]]:
    """Of the projects: those waiting for a slot, those throttled (effective parallelism
    below their setting), and those whose endpoint is failing or paused (endpoint health,
    DESIGN.md §12); one read, no lock."""
    rows = db.session.execute(_flags_select(), {"ids": list(project_ids)}).all()
    return (
        {pid for pid, waiting, _, _ in rows if waiting},
        {pid for pid, _, low, _ in rows if low},
        {pid for pid, _, _, failing in rows if failing},
    )


@functools.cache
def _flags_select() -> sa.Select:
    return sa.select(
        flow_table.c.project_id,
        flow_table.c.waiting,
        flow_table.c.effective.is_not(None),
        sa.or_(  # endpoint health
            flow_table.c.endpoint_failures > 0, flow_table.c.endpoint_paused_at.is_not(None)
        ),
    ).where(flow_table.c.project_id.in_(sa.bindparam("ids", expanding=True)))


def press_locked(
    outcomes: dict[int, list[flow.Outcome]],
    states: dict[int, flow.State],
    now: datetime,
) -> None:
    """Apply the endpoints' back-pressure (``outcomes``) to their projects, whose flow rows the
    caller locked (``states``, updated in place); inside the caller's transaction."""
    settings = settings_of(outcomes)
    for project_id in sorted(outcomes):
        if project_id in settings:
            state = flow.after_results(
                settings[project_id], states[project_id], outcomes[project_id], now
            )
            save_flow(project_id, state)
            states[project_id] = state


def apply_back_pressure(results: list[tuple[int, Result]], now: datetime) -> None:
    """Update the flow state of the projects whose endpoints answered ``(project id, result)``:
    those that throttled, and those recovering from it; called inside the caller's transaction."""
    outcomes = outcomes_by_project(results)
    calm = {pid for pid, outs in outcomes.items() if all(o.ok for o in outs)}
    # Only projects below their setting count successes; skip a lock for the rest.
    throttled = flow_flags(calm)[1] if calm else set()
    touched = pressured(outcomes, throttled)
    if touched:
        states = {pid: lock_flow(pid) for pid in touched}
        press_locked({pid: outcomes[pid] for pid in touched}, states, now)
