"""A project's flow-control settings (DESIGN.md §9): change them, and show what is in force;
and its endpoint's state (DESIGN.md §12): active or paused, and resuming it.

``flow`` holds the rules (``validate``, ``settings_of``, ``effective``); this module applies them
to a stored project for the dashboard, the admin CLI and the API. The endpoint's pause lives in
``project_flow`` (``endpoint_paused_at``, ``endpoint_pause_reason``); ``endpoint_health`` decides
when to pause, this module shows it and lifts it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa

from . import clock, flow, plans, transport
from .errors import BadRequest
from .extensions import db
from .models import Project, ProjectFlow

logger = logging.getLogger(__name__)


class _Keep:
    def __repr__(self) -> str:
        return "KEEP"


#: "Leave this field as it is" (None resets it to its default).
KEEP: Final = _Keep()

#: Longer text than this is not a number a user meant to type.
MAX_TEXT = 32
_INTEGER = re.compile(r"[+-]?[0-9]+")


@dataclass(frozen=True)
class FlowStatus:
    """A project's flow control: the settings in force and the live state."""

    plan: str
    #: The plan's parallelism cap.
    cap: int
    #: Parallelism in force (the plan's cap unless the project set a lower value).
    parallelism: int
    #: The project chose ``parallelism`` (False: it follows the plan's cap).
    parallelism_is_set: bool
    rate: float | None
    #: Parallelism now, after back-pressure (429/503 halve it).
    effective: int
    #: A Retry-After holds the project's deliveries until then (None: not paused).
    paused_until: datetime | None
    #: Due attempts are waiting for a slot, a rate token or the end of a pause.
    waiting: bool

    @property
    def throttled(self) -> bool:
        return self.effective < self.parallelism

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape: ``flowControl`` as PATCH takes it, plus the live state."""
        return {
            "plan": self.plan,
            "flowControl": {"parallelism": self.parallelism, "ratePerSecond": self.rate},
            "planParallelismCap": self.cap,
            "effectiveParallelism": self.effective,
            "pausedUntil": clock.isoformat(self.paused_until),
            "waiting": self.waiting,
        }


def set_flow_control(
    project: Project, parallelism: object = KEEP, rate: object = KEEP
) -> FlowStatus:
    """Change the fields given (None resets one to its default), validated against the plan, and
    commit; raise BadRequest and change nothing if either is invalid. Returns the new status."""
    plan = plans.get(project.team.plan)
    checked_parallelism, checked_rate = flow.validate(
        None if parallelism is KEEP else parallelism, None if rate is KEEP else rate, plan
    )
    if parallelism is not KEEP:
        project.parallelism = checked_parallelism
    if rate is not KEEP:
        project.rate_per_second = checked_rate
    db.session.commit()
    logger.info(
        "project %s flow control: parallelism=%s rate=%s",
        project.id,
        project.parallelism,
        project.rate_per_second,
    )
    return flow_status(project)


def flow_status(project: Project) -> FlowStatus:
    """Return the project's settings in force and its live flow state (defaults without a row)."""
    plan = plans.get(project.team.plan)
    settings = flow.settings_of(project.parallelism, project.rate_per_second, plan)
    row = db.session.get(ProjectFlow, project.id)
    state = (
        flow.State(row.effective, row.streak, row.paused_until, row.tokens, row.tokens_at)
        if row is not None
        else flow.State()
    )
    paused = state.paused_until
    return FlowStatus(
        plan=plan.name,
        cap=settings.cap,
        parallelism=settings.parallelism,
        parallelism_is_set=project.parallelism is not None,
        rate=settings.rate,
        effective=flow.effective(settings, state),
        paused_until=paused if paused is not None and paused > clock.utcnow() else None,
        waiting=bool(row and row.waiting),
    )


def set_from_form(project: Project, parallelism: str, rate: str) -> FlowStatus:
    """Save both typed fields (the webhook page's form); a blank one resets to its default."""
    parallelism, rate = parallelism.strip(), rate.strip()
    return set_flow_control(
        project,
        parse_parallelism(parallelism) if parallelism else None,
        parse_rate(rate) if rate else None,
    )


def parse_parallelism(text: str) -> int:
    """Read a typed parallelism; raise BadRequest unless it is an integer (``flow.validate``
    checks the range)."""
    text = text.strip()
    if len(text) > MAX_TEXT or not _INTEGER.fullmatch(text):
        raise BadRequest(f"parallelism must be an integer, got {text[:MAX_TEXT]!r}")
    return int(text)


def parse_rate(text: str) -> float:
    """Read a typed ratePerSecond; raise BadRequest unless it is a number (``flow.validate``
    refuses NaN, infinity and what is out of range)."""
    text = text.strip()
    try:
        if len(text) > MAX_TEXT or not text.isascii():
            raise ValueError(text)
        return float(text)
    except ValueError:
        raise BadRequest(f"ratePerSecond must be a number, got {text[:MAX_TEXT]!r}") from None


@dataclass(frozen=True)
class EndpointState:
    """Whether the project's endpoint receives attempts (DESIGN.md §12)."""

    #: When it was paused (None: active).
    paused_at: datetime | None = None
    #: Why: how many failures since when, and the last error.
    reason: str | None = None

    @property
    def paused(self) -> bool:
        return self.paused_at is not None

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape ``{state: "active"|"paused", reason, since}``."""
        return {
            "state": "paused" if self.paused else "active",
            "reason": self.reason if self.paused else None,
            "since": clock.isoformat(self.paused_at),
        }


def endpoint_state(project_id: int) -> EndpointState:
    """Return whether the project's endpoint is paused, why and since when."""
    row = db.session.execute(
        sa.select(ProjectFlow.endpoint_paused_at, ProjectFlow.endpoint_pause_reason).where(
            ProjectFlow.project_id == project_id
        )
    ).first()
    if row is None or row.endpoint_paused_at is None:
        return EndpointState()
    return EndpointState(row.endpoint_paused_at, row.endpoint_pause_reason)


def resume_endpoint(project_id: int) -> bool:
    """Resume the project's paused endpoint and commit; return whether it was paused.

    Its held attempts are released again: the project is flagged waiting and the release loop
    woken (best effort; it also finds waiting projects by itself).
    """
    result = db.session.execute(
        sa.update(ProjectFlow)
        .where(ProjectFlow.project_id == project_id, ProjectFlow.endpoint_paused_at.is_not(None))
        .values(endpoint_paused_at=None, endpoint_pause_reason=None, waiting=True)
    )
    db.session.commit()
    if result.rowcount != 1:
        return False
    logger.info("project %s endpoint resumed", project_id)
    try:
        transport.wake(project_id)
    except transport.TransportUnavailable as exc:
        logger.warning("project %s resumed; the release loop will find it (%s)", project_id, exc)
    return True
