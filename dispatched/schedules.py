"""Recurring schedules (DESIGN.md §13): validation, the CRUD of the API and dashboard, previews,
and firing due schedules from the scheduler process.

Firing: the scheduler's release loop calls ``on_tick`` each pass, which fires what is due
(``fire_due``) before the job service releases attempts, and folds the next fire time into the
loop's wake-up time. A pass locks the due schedules (``FOR UPDATE SKIP LOCKED`` on PostgreSQL),
and in **one transaction** records each fire under its primary key (schedule, fire time),
inserts its job through the job service (monthly quota counted; a fire the quota has no room
for is recorded as skipped, with the reason) and moves the schedule to its next fire time. So a
fire happens exactly once, with any number of scheduler processes and across restarts: a
second process skips locked rows or, at worst, collides on the key and rolls back.

Fire times come from ``cron`` (the DST rule). A fire found more than ``SCHEDULE_MISFIRE_GRACE``
seconds late was missed while no scheduler ran: ``catchUp: none`` records it as skipped,
``latest`` makes up the most recent missed fire once, now.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import IntegrityError

from . import clock, cron, job_input, jobs, metrics, paging, plans, transport
from .errors import BadRequest, Conflict, NotFound
from .extensions import db
from .ids import looks_like, new_id
from .jobs.handoff import schedule as schedule_attempt
from .jobs.intake import add_fired
from .models import Job, JobStatus, Project, Schedule, ScheduleFire, Team, UTCDateTime

logger = logging.getLogger(__name__)

CATCH_UP = ("none", "latest")
FIELDS = ("cron", "timezone", "payload", "maxRetries", "name", "catchUp")
MAX_NAME = 200
MAX_PREVIEW = 100
#: Most schedules fired in one transaction; more due ones are fired in the next pass at once.
BATCH = 500

CREATED = "created"
SKIPPED = "skipped"

_table = Schedule.__table__
_fires = ScheduleFire.__table__


# -- validation -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """A schedule's validated settings."""

    cron: str
    timezone: str
    payload: dict[str, Any]
    max_retries: int
    name: str | None
    catch_up: str


def _check_fields(body: dict[str, Any]) -> None:
    for key in body:
        if key not in FIELDS:
            raise BadRequest(
                f"unknown field {key[:50]!r}; a schedule has {', '.join(FIELDS)}", field=key[:50]
            )


def _name(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value.strip()) <= MAX_NAME:
        raise BadRequest(
            f"name must be a string of 1-{MAX_NAME} characters or null, got {value!r:.80}",
            field="name",
        )
    if not value.isprintable():
        raise BadRequest("name must be printable text", field="name")
    return value.strip()


def _catch_up(value: Any) -> str:
    if value not in CATCH_UP:
        raise BadRequest(
            f"catchUp must be one of {', '.join(CATCH_UP)}, got {value!r:.80}", field="catchUp"
        )
    return str(value)


def _timezone(value: Any) -> str:
    cron.zone(value)
    return str(value)


def parse_create(body: dict[str, Any], plan: plans.Plan) -> Spec:
    """Validate a ``POST /api/schedules`` body (every message names the field).

    Raises:
        BadRequest: a bad or unknown field; PayloadTooLarge: the payload is over the plan's.
    """
    _check_fields(body)
    if "cron" not in body:
        raise BadRequest("cron is required, e.g. '0 9 * * MON-FRI' or '@hourly'", field="cron")
    return Spec(
        cron=cron.parse(body["cron"]),
        timezone=_timezone(body.get("timezone", "UTC")),
        payload=job_input.parse_payload(body.get("payload"), plan),
        max_retries=job_input.parse_max_retries(body.get("maxRetries"), plan),
        name=_name(body.get("name")),
        catch_up=_catch_up(body.get("catchUp", "none")),
    )


def parse_patch(body: dict[str, Any], plan: plans.Plan) -> dict[str, Any]:
    """Validate a ``PATCH /api/schedules/<id>`` body: the given fields only, by the same rules
    (``maxRetries: null`` = the plan's cap, ``name: null`` clears it)."""
    _check_fields(body)
    changes: dict[str, Any] = {}
    if "cron" in body:
        changes["cron"] = cron.parse(body["cron"])
    if "timezone" in body:
        changes["timezone"] = _timezone(body["timezone"])
    if "payload" in body:
        changes["payload"] = job_input.parse_payload(body["payload"], plan)
    if "maxRetries" in body:
        changes["max_retries"] = job_input.parse_max_retries(body["maxRetries"], plan)
    if "name" in body:
        changes["name"] = _name(body["name"])
    if "catchUp" in body:
        changes["catch_up"] = _catch_up(body["catchUp"])
    return changes


def parse_count(value: str | None, default: int = 5) -> int:
    """The ``count`` of a preview: 1-100."""
    if value is None:
        return default
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value[:4]) <= MAX_PREVIEW:
        raise BadRequest(
            f"count must be an integer from 1 to {MAX_PREVIEW}, got {value[:20]!r}", field="count"
        )
    return int(value)


def parse_from(value: str | None) -> datetime:
    """The ``from`` of a preview: an ISO-8601 time (default now)."""
    if value is None:
        return clock.utcnow()
    try:
        start = clock.parse_iso(value)
    except ValueError as exc:
        raise BadRequest(f"from: {exc}", field="from") from None
    if not 1970 <= start.year <= 2999:
        raise BadRequest(f"from must be in the years 1970-2999, got {value[:64]!r}", field="from")
    return start


# -- reading --------------------------------------------------------------------------------


def looks_like_id(schedule_id: str) -> bool:
    return looks_like(schedule_id, "sch")


def get(project_id: int, schedule_id: str, lock: bool = False) -> Schedule:
    """Return a live schedule of the project, or raise NotFound (also for another project's
    or a deleted one). ``lock`` takes its row lock (waits for a fire in progress)."""
    schedule = None
    if looks_like_id(schedule_id):
        schedule = db.session.get(
            Schedule, schedule_id, with_for_update=lock or None, populate_existing=lock
        )
    if schedule is None or schedule.project_id != project_id or schedule.deleted_at is not None:
        raise NotFound(f"Schedule {schedule_id[:60]!r} not found", scheduleId=schedule_id[:60])
    return schedule


def list_schedules(
    project_id: int, limit: int, cursor: str | None
) -> tuple[list[Schedule], str | None]:
    """A page of the project's schedules, newest first, and the next page's cursor."""
    query = sa.select(Schedule).where(
        Schedule.project_id == project_id, Schedule.deleted_at.is_(None)
    )
    return paging.newest_first(query, Schedule, cursor, limit, looks_like_id)


def jobs_of(
    project_id: int, schedule_id: str, status: str | None, limit: int, cursor: str | None
) -> tuple[list[Job], str | None]:
    """A page of the jobs the schedule created, newest first."""
    schedule = get(project_id, schedule_id)
    return jobs.list_jobs(project_id, status, limit, cursor, schedule_id=schedule.id)


def fires_of(project_id: int, schedule_id: str, limit: int) -> list[ScheduleFire]:
    """The schedule's most recent fires (created and skipped), newest first."""
    schedule = get(project_id, schedule_id)
    return list(
        db.session.execute(
            sa.select(ScheduleFire)
            .where(ScheduleFire.schedule_id == schedule.id)
            .order_by(ScheduleFire.fire_at.desc())
            .limit(limit)
        ).scalars()
    )


def count(team_id: int) -> int:
    """The team's live schedules (what the plan caps)."""
    return db.session.execute(
        sa.select(sa.func.count())
        .select_from(Schedule)
        .join(Project, Project.id == Schedule.project_id)
        .where(Project.team_id == team_id, Schedule.deleted_at.is_(None))
    ).scalar_one()


def preview(expression: str, timezone: str, count: int, start: datetime) -> list[cron.Fire]:
    """The next ``count`` fire times after ``start`` (validates both settings)."""
    return cron.fires_after(cron.parse(expression), cron.zone(timezone), start, count)


def local_time(schedule: Schedule, value: datetime | None) -> datetime | None:
    """``value`` in the schedule's zone."""
    return value.astimezone(cron.zone(schedule.timezone)) if value else None


# -- changing -------------------------------------------------------------------------------


def _plan_next(schedule: Schedule, after: datetime) -> None:
    """Point the schedule at its first fire after ``after`` (None while paused)."""
    fire = None
    if not schedule.paused:
        fire = cron.next_fire(schedule.cron, cron.zone(schedule.timezone), after)
    schedule.next_fire_at = fire.at if fire else None
    schedule.next_fire_dst = fire.dst if fire else None


def _commit() -> None:
    try:
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise


def _cancel_ahead(project_id: int, schedule_id: str) -> None:
    """Cancel the jobs fired ahead of a fire time that has not come yet (the schedule was
    paused, deleted or re-timed): what a schedule fires after that is nothing."""
    pending = db.session.execute(
        sa.select(Job.id).where(
            Job.schedule_id == schedule_id,
            Job.status == JobStatus.QUEUED,
            Job.attempts == 0,
            Job.scheduled_for > clock.utcnow(),
        )
    ).scalars()
    for job_id in list(pending):
        with contextlib.suppress(Conflict):  # released meanwhile: its time came
            jobs.cancel(project_id, job_id)


def create(project_id: int, team_id: int, plan_name: str, spec: Spec) -> Schedule:
    """Create a schedule in the project, within the plan's cap on the team's schedules.

    Raises:
        Conflict: the team already has as many schedules as its plan allows.
    """
    plan = plans.get(plan_name)
    now = clock.utcnow()
    try:
        # Serialize the team's creations (row lock; SQLite's write lock): the count below then
        # cannot be overtaken by a concurrent create.
        db.session.execute(sa.update(Team).where(Team.id == team_id).values(plan=Team.plan))
        if plan.max_schedules is not None and count(team_id) >= plan.max_schedules:
            raise Conflict(
                f"Schedule limit reached: the {plan.name} plan allows {plan.max_schedules} "
                "schedules per team; delete one or move to a larger plan",
                limit=plan.max_schedules,
                plan=plan.name,
            )
        schedule = Schedule(
            id=new_id("sch"),
            project_id=project_id,
            name=spec.name,
            cron=spec.cron,
            timezone=spec.timezone,
            payload=spec.payload,
            max_retries=spec.max_retries,
            catch_up=spec.catch_up,
            paused=False,
            created_at=now,
            updated_at=now,
        )
        _plan_next(schedule, now)
        db.session.add(schedule)
    except BaseException:
        db.session.rollback()
        raise
    _commit()
    return schedule


def update(project_id: int, schedule_id: str, changes: dict[str, Any]) -> Schedule:
    """Apply validated changes; a new cron or zone moves the next fire (from now)."""
    schedule = get(project_id, schedule_id, lock=True)
    for key, value in changes.items():
        setattr(schedule, key, value)
    retimed = "cron" in changes or "timezone" in changes
    if retimed:
        _plan_next(schedule, clock.utcnow())
    if changes:
        schedule.updated_at = clock.utcnow()
    _commit()
    if retimed:
        _cancel_ahead(project_id, schedule.id)
    return schedule


def pause(project_id: int, schedule_id: str) -> Schedule:
    """Stop firing (nothing fires while paused; no catch-up on resume)."""
    schedule = get(project_id, schedule_id, lock=True)
    if not schedule.paused:
        schedule.paused = True
        _plan_next(schedule, clock.utcnow())
        schedule.updated_at = clock.utcnow()
    _commit()
    _cancel_ahead(project_id, schedule.id)
    return schedule


def resume(project_id: int, schedule_id: str) -> Schedule:
    """Fire again from the next fire time after now."""
    schedule = get(project_id, schedule_id, lock=True)
    if schedule.paused:
        schedule.paused = False
        _plan_next(schedule, clock.utcnow())
        schedule.updated_at = clock.utcnow()
    _commit()
    return schedule


def delete(project_id: int, schedule_id: str) -> str:
    """Delete the schedule: it stops at once (its jobs stay, still linked to it)."""
    schedule = get(project_id, schedule_id, lock=True)
    now = clock.utcnow()
    schedule.deleted_at = now
    schedule.updated_at = now
    schedule.next_fire_at = None
    schedule.next_fire_dst = None
    _commit()
    _cancel_ahead(project_id, schedule.id)
    return schedule.id


# -- firing ---------------------------------------------------------------------------------


@dataclass
class FirePass:
    """What one firing pass did."""

    #: Projects that got a job due now (the release loop releases them in the same pass).
    projects: set[int] = field(default_factory=set)
    created: int = 0
    skipped: int = 0
    #: Jobs created ahead of their fire time (handed to the transport for that time).
    ahead: int = 0
    #: Schedules moved on (fired, skipped or settled).
    moved: int = 0
    #: When the loop must look again: the earliest next fire time minus the lead (None: no
    #: schedule is planned).
    next_at: datetime | None = None


@dataclass
class _Fire:
    """One decided fire of a due schedule."""

    schedule_id: str
    project_id: int
    team_id: int
    plan: str
    fire_at: datetime
    dst: str | None
    #: The job to create (None: skipped, ``reason`` says why).
    job: job_input.DispatchInput | None
    reason: str | None = None
    job_id: str | None = None


@dataclass
class _Move:
    """A due schedule's new position."""

    schedule_id: str
    old: datetime
    next_at: datetime | None
    next_dst: str | None
    fires: list[_Fire]


def _decide(row: Any, now: datetime, grace: timedelta) -> _Move:
    """Decide what a due schedule does: fire its due time, or handle the fires it missed."""
    tz = cron.zone(row.timezone)
    due: datetime = row.next_fire_at
    base = {"schedule_id": row.id, "project_id": row.project_id, "team_id": row.team_id}
    base["plan"] = row.plan

    def job(when: datetime) -> job_input.DispatchInput:
        return job_input.DispatchInput(row.payload, when, row.max_retries, None)

    fires: list[_Fire] = []
    if now - due <= grace:
        fires.append(_Fire(**base, fire_at=due, dst=row.next_fire_dst, job=job(due)))
        upcoming = cron.next_fire(row.cron, tz, due)
    else:
        latest = cron.latest_fire(row.cron, tz, now) or cron.Fire(due, due, row.next_fire_dst)
        latest_at = max(latest.at, due)
        missed = f"missed while no scheduler was running (due {clock.isoformat(due)})"
        if now - latest_at <= grace:
            # The current fire is on time; the ones before it were missed.
            fires.append(_Fire(**base, fire_at=due, dst=row.next_fire_dst, job=None))
            fires[-1].reason = f"{missed}; fires until {clock.isoformat(latest_at)} skipped"
            fires.append(_Fire(**base, fire_at=latest_at, dst=latest.dst, job=job(latest_at)))
        elif row.catch_up == "latest":
            fires.append(_Fire(**base, fire_at=latest_at, dst=latest.dst, job=job(now)))
            made_up = clock.isoformat(now)
            fires[-1].reason = f"catch-up: the latest missed fire, made up at {made_up}"
        else:
            fires.append(_Fire(**base, fire_at=latest_at, dst=latest.dst, job=None))
            fires[-1].reason = f"{missed}; catchUp is none"
        upcoming = cron.next_fire(row.cron, tz, max(now, latest_at))
    return _Move(
        row.id, due, upcoming.at if upcoming else None, upcoming.dst if upcoming else None, fires
    )


def _due_query(now: datetime, limit: int, only: str | None = None) -> sa.Select:
    query = (
        sa.select(
            _table.c.id,
            _table.c.project_id,
            _table.c.cron,
            _table.c.timezone,
            _table.c.payload,
            _table.c.max_retries,
            _table.c.catch_up,
            _table.c.next_fire_at,
            _table.c.next_fire_dst,
            Project.team_id,
            Team.plan,
        )
        .join(Project, Project.id == _table.c.project_id)
        .join(Team, Team.id == Project.team_id)
        .where(_table.c.next_fire_at <= now)
        .order_by(_table.c.next_fire_at)
        .limit(limit)
        # Another scheduler process firing the same rows? Skip them (PostgreSQL; SQLite
        # serializes writers, and the fire's primary key refuses a second fire anyway).
        .with_for_update(of=_table, skip_locked=True)
    )
    return query.where(_table.c.id == only) if only else query


def _apply(moves: list[_Move], now: datetime) -> list[_Fire]:
    """Write one batch of decided moves (jobs, fire records, schedules); the caller commits."""
    fires = [fire for move in moves for fire in move.fires]
    by_team: dict[tuple[int, str], list[_Fire]] = defaultdict(list)
    for fire in fires:
        if fire.job is not None:
            by_team[(fire.team_id, fire.plan)].append(fire)
    for (team_id, plan_name), wanted in sorted(by_team.items()):
        plan = plans.get(plan_name)
        items = [(f.project_id, f.schedule_id, f.job) for f in wanted if f.job]
        for fire, job_id in zip(wanted, add_fired(team_id, plan, items, now), strict=True):
            fire.job_id = job_id
            if job_id is None:
                fire.reason = (
                    f"LIMIT_REACHED: the monthly quota of {plan.monthly_quota} jobs on the "
                    f"{plan.name} plan is used up"
                )
    records = [
        {
            "schedule_id": f.schedule_id,
            "fire_at": f.fire_at,
            "outcome": CREATED if f.job_id else SKIPPED,
            "job_id": f.job_id,
            "reason": f.reason,
            "dst": f.dst,
            "recorded_at": now,
        }
        for f in fires
    ]
    db.session.execute(sa.insert(_fires), records)
    last = {}
    for fire in fires:
        if fire.job_id:
            last[fire.schedule_id] = fire.fire_at
    stmt = (
        sa.update(_table)
        .where(
            _table.c.id == sa.bindparam("b_id"),
            _table.c.next_fire_at == sa.bindparam("b_old", type_=UTCDateTime),
        )
        .values(
            next_fire_at=sa.bindparam("b_next", type_=UTCDateTime),
            next_fire_dst=sa.bindparam("b_dst"),
            last_fire_at=sa.func.coalesce(
                sa.bindparam("b_last", type_=UTCDateTime), _table.c.last_fire_at
            ),
        )
    )
    db.session.execute(
        stmt,
        [
            {
                "b_id": m.schedule_id,
                "b_old": m.old,
                "b_next": m.next_at,
                "b_dst": m.next_dst,
                "b_last": last.get(m.schedule_id),
            }
            for m in moves
        ],
    )
    return fires


def _fire_batch(rows: list[Any], now: datetime, grace: timedelta, done: FirePass) -> None:
    """Decide and write one batch in one transaction; commit; then hand the jobs created
    ahead of their fire time to the transport for that time (due ones wake the loop)."""
    moves = [_decide(row, now, grace) for row in rows]
    fires = _apply(moves, now)
    db.session.commit()
    done.moved += len(moves)
    for fire in fires:
        if not fire.job_id:
            done.skipped += 1
            continue
        done.created += 1
        assert fire.job is not None
        if fire.job.schedule_for > now:
            done.ahead += 1
            timeout = plans.get(fire.plan).delivery_timeout
            schedule_attempt(fire.job_id, 1, fire.job.schedule_for, timeout)
        else:
            done.projects.add(fire.project_id)


def _settle_conflict(schedule_id: str, now: datetime) -> None:
    """A fire of this schedule is already recorded (another process, or a clock that went
    back): move the schedule past its recorded fires without firing again."""
    row = db.session.execute(_due_query(now, 1, only=schedule_id)).first()
    if row is None:
        db.session.rollback()
        return
    fired = db.session.execute(
        sa.select(sa.func.max(_fires.c.fire_at)).where(_fires.c.schedule_id == schedule_id)
    ).scalar()
    upcoming = cron.next_fire(row.cron, cron.zone(row.timezone), max(fired or now, now))
    db.session.execute(
        sa.update(_table)
        .where(_table.c.id == schedule_id, _table.c.next_fire_at == row.next_fire_at)
        .values(
            next_fire_at=upcoming.at if upcoming else None,
            next_fire_dst=upcoming.dst if upcoming else None,
        )
    )
    db.session.commit()
    logger.warning("schedule %s: its fire was already recorded; moved on", schedule_id)


def fire_due(
    now: datetime | None = None, limit: int = BATCH, ahead: float | None = None
) -> FirePass:
    """Fire the schedules due by ``now`` + ``ahead`` seconds (default: the clock and
    ``SCHEDULE_FIRE_AHEAD``), at most ``limit`` of them.

    A fire within the lead creates its job before the fire time, scheduled for it: the
    release loop then releases it at its time like any scheduled job, so a minute boundary
    where many schedules fire costs no lateness. Pausing, deleting or re-timing a schedule
    cancels such a job (``_cancel_ahead``).
    """
    now = now or clock.utcnow()
    lead = timedelta(seconds=current_app.config["SCHEDULE_FIRE_AHEAD"] if ahead is None else ahead)
    horizon = now + lead
    grace = timedelta(seconds=current_app.config["SCHEDULE_MISFIRE_GRACE"])
    done = FirePass()
    try:
        rows = db.session.execute(_due_query(horizon, limit)).all()
        if rows:
            try:
                _fire_batch(rows, now, grace, done)
            except IntegrityError:
                # Some fire was recorded already: redo the batch one schedule at a time, so
                # one conflict never holds up the others.
                db.session.rollback()
                for row in rows:
                    try:
                        one = db.session.execute(_due_query(horizon, 1, only=row.id)).all()
                        if one:
                            _fire_batch(one, now, grace, done)
                    except IntegrityError:
                        db.session.rollback()
                        _settle_conflict(row.id, horizon)
                        done.moved += 1
        nxt = db.session.execute(sa.select(sa.func.min(_table.c.next_fire_at))).scalar()
        done.next_at = nxt - lead if nxt is not None else None
    finally:
        db.session.rollback()
    if done.created:
        metrics.count_job("dispatched", done.created)
    return done


#: Most seconds one scheduler pass spends firing before it releases attempts.
FIRE_BUDGET = 1.0


def on_tick(due: list[tuple[str, int]], woken: set[int]) -> transport.Tick:
    """The scheduler's pass: fire what is due (batch after batch, for up to ``FIRE_BUDGET``
    seconds), then the job service's release decision (``jobs.on_tick``), with the fired
    jobs' projects woken and the next fire time as the latest wake-up. A firing failure is
    logged and retried in 1 s; releases go on."""
    return _release(due, woken, _fire())


class Ticker:
    """``on_tick`` for the scheduler process: it looks for due schedules only when one may be
    due, at the next fire time it learned (less the lead) and at least every ``recheck``
    seconds (a schedule created or re-timed by the API meanwhile), so the passes that release
    dispatched jobs cost no schedule queries. ``recheck`` must stay below the fire lead
    (SCHEDULE_FIRE_AHEAD) for a new schedule's first fire to be created ahead of its time."""

    def __init__(self, recheck: float) -> None:
        self.recheck = recheck
        self._checked: float | None = None
        self._next_at: datetime | None = None

    def __call__(self, due: list[tuple[str, int]], woken: set[int]) -> transport.Tick:
        stale = self._checked is None or time.monotonic() - self._checked >= self.recheck
        if stale or (self._next_at is not None and clock.utcnow() >= self._next_at):
            fired = _fire()
            self._checked, self._next_at = time.monotonic(), fired.next_at
        else:
            fired = FirePass(next_at=self._next_at)
        return _release(due, woken, fired)


def _fire() -> FirePass:
    fired = FirePass()
    deadline = time.monotonic() + FIRE_BUDGET
    try:
        while True:
            batch = fire_due()
            fired.projects |= batch.projects
            fired.created += batch.created
            fired.skipped += batch.skipped
            fired.ahead += batch.ahead
            fired.next_at = batch.next_at
            if batch.moved < BATCH or time.monotonic() > deadline:
                break
    except Exception:
        logger.exception("firing due schedules failed; retrying in 1 s")
        db.session.rollback()
        fired.next_at = clock.utcnow() + timedelta(seconds=1)
    if fired.created or fired.skipped:
        logger.info(
            "schedules: %d fired (%d ahead of time), %d skipped",
            fired.created,
            fired.ahead,
            fired.skipped,
        )
    return fired


def _release(due: list[tuple[str, int]], woken: set[int], fired: FirePass) -> transport.Tick:
    tick = jobs.on_tick(due, woken | fired.projects)
    if fired.next_at is not None:
        tick.next_wake = min(filter(None, [tick.next_wake, fired.next_at]))
    return tick
