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

from . import clock, endpoint_health, flow, plans, transport
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


def resume_endpoint(project_id: int) -> bool:
    """Resume the project's paused endpoint (DESIGN.md §12) and commit: its held attempts are
    released again, parallelism starting at 1 and doubling per success up to the setting.
    Returns whether it was paused (False: nothing changed)."""
    if not endpoint_health.resume(project_id):
        return False
    try:
        transport.wake(project_id)  # release its held attempts now, not at the next pass
    except transport.TransportUnavailable as exc:
        logger.warning("project %s resumed; the release loop will find it (%s)", project_id, exc)
    return True


#: What the API and the dashboard show about a project's endpoint.
EndpointState = endpoint_health.EndpointState
endpoint_state = endpoint_health.state


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
