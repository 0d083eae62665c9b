"""Flow control of a project's deliveries (DESIGN.md §9): parallelism, rate, back-pressure;
and the endpoint-health pause and slow start (DESIGN.md §12, counted by ``endpoint_health``).

The arithmetic is pure (``budget``, ``after_results``); ``settings_of`` validates what a user
asks for against the plan. The release of attempts (``jobs.release``) applies it under the
project's ``project_flow`` row lock, so the caps hold across every worker node.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from .errors import BadRequest
from .plans import Plan

#: 429/503 halve the effective parallelism; this many successes in a row add 1 back.
RECOVER_AFTER = 20
#: A Retry-After pauses the project for at most this long.
MAX_PAUSE = timedelta(hours=1)
#: ratePerSecond may not exceed this (a guard against typos, not a plan limit).
MAX_RATE = 10_000.0
#: Throttling statuses: they shrink the project's parallelism and may pause it.
THROTTLING = (429, 503)


@dataclass(frozen=True)
class Settings:
    """What the project asked for, bounded by its plan."""

    parallelism: int
    rate: float | None
    cap: int


@dataclass(frozen=True)
class State:
    """The live part (a ``project_flow`` row)."""

    effective: int | None = None
    streak: int = 0
    paused_until: datetime | None = None
    tokens: float = 1.0
    tokens_at: datetime | None = None
    #: The endpoint is paused (DESIGN.md §12): only a probe is released, at ``probe_at``.
    endpoint_paused_at: datetime | None = None
    probe_at: datetime | None = None
    #: After a resume: ``effective`` doubles per success until it reaches the setting.
    slow_start: bool = False


@dataclass(frozen=True)
class Outcome:
    """What one finished attempt tells flow control."""

    ok: bool
    http_status: int | None = None
    retry_after: float | None = None


def settings_of(parallelism: int | None, rate: float | None, plan: Plan) -> Settings:
    """Return the settings in force: None means the plan's cap and no rate limit."""
    cap = plan.parallelism
    return Settings(parallelism=min(parallelism or cap, cap), rate=rate or None, cap=cap)


def validate(parallelism: object, rate: object, plan: Plan) -> tuple[int | None, float | None]:
    """Check user-given settings (None resets to the default); raise BadRequest if invalid."""
    if parallelism is not None:
        if isinstance(parallelism, bool) or not isinstance(parallelism, int):
            raise BadRequest(f"parallelism must be an integer, got {parallelism!r}")
        if not 1 <= parallelism <= plan.parallelism:
            raise BadRequest(
                f"parallelism must be between 1 and {plan.parallelism} (the {plan.name} plan's"
                f" cap), got {parallelism}"
            )
    if rate is not None:
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate):
            raise BadRequest(f"ratePerSecond must be a number, got {rate!r}")
        if not 0 < rate <= MAX_RATE:
            raise BadRequest(f"ratePerSecond must be above 0 and at most {MAX_RATE:g}, got {rate}")
        rate = float(rate)
    return parallelism, rate


def effective(settings: Settings, state: State) -> int:
    """Parallelism in force now: the setting, lowered by back-pressure."""
    if state.effective is None:
        return settings.parallelism
    return max(1, min(state.effective, settings.parallelism))


def tokens_now(settings: Settings, state: State, now: datetime) -> float:
    """Rate tokens available at ``now`` (a bucket of 1: no 1 s window exceeds rate + 1)."""
    if settings.rate is None:
        return math.inf
    if state.tokens_at is None:
        return 1.0
    elapsed = max(0.0, (now - state.tokens_at).total_seconds())
    return min(1.0, state.tokens + elapsed * settings.rate)


def budget(
    settings: Settings, state: State, in_flight: int, now: datetime
) -> tuple[int, datetime | None]:
    """How many attempts may be released now, and when to look again if that is limited by
    time (a pause, the next probe or the rate) rather than by attempts in flight (then None).

    A paused endpoint gets one attempt (the probe) at a time, once ``probe_at`` has come.
    """
    if state.paused_until is not None and state.paused_until > now:
        return 0, state.paused_until
    paused = state.endpoint_paused_at is not None
    if paused and state.probe_at is not None and state.probe_at > now:
        return 0, state.probe_at
    slots = max(0, (1 if paused else effective(settings, state)) - in_flight)
    tokens = tokens_now(settings, state, now)
    if tokens == math.inf:
        return slots, None
    allowed = min(slots, math.floor(tokens + 1e-9))
    if allowed == 0 and slots > 0:
        assert settings.rate is not None
        return 0, now + timedelta(seconds=(1.0 - tokens) / settings.rate)
    return allowed, None


def next_token_at(settings: Settings, state: State, now: datetime) -> datetime | None:
    """When the next rate token is available (None: no rate, or one is available now)."""
    if settings.rate is None:
        return None
    tokens = tokens_now(settings, state, now)
    return None if tokens >= 1.0 else now + timedelta(seconds=(1.0 - tokens) / settings.rate)


def spend(settings: Settings, state: State, released: int, now: datetime) -> State:
    """Take ``released`` rate tokens."""
    if settings.rate is None:
        return state
    return replace(state, tokens=tokens_now(settings, state, now) - released, tokens_at=now)


def after_results(
    settings: Settings, state: State, outcomes: list[Outcome], now: datetime
) -> State:
    """Apply back-pressure: 429/503 halve the parallelism (min 1) and a Retry-After pauses the
    project; RECOVER_AFTER successes in a row add 1 back, up to the setting. In slow start
    (after an endpoint resumed) each success doubles it instead, up to the setting; a throttling
    answer ends slow start."""
    current = effective(settings, state)
    streak, paused, slow = state.streak, state.paused_until, state.slow_start
    for outcome in outcomes:
        if outcome.http_status in THROTTLING:
            current, streak, slow = max(1, current // 2), 0, False
            if outcome.retry_after:
                until = now + min(timedelta(seconds=outcome.retry_after), MAX_PAUSE)
                paused = until if paused is None or until > paused else paused
        elif outcome.ok and slow:
            current, streak = min(current * 2, settings.parallelism), 0
        elif outcome.ok and current < settings.parallelism:
            streak += 1
            if streak >= RECOVER_AFTER:
                streak = 0
                current += 1
        elif outcome.ok:
            streak = 0  # at the setting: nothing to recover
        else:
            streak = 0
    if paused is not None and paused <= now:
        paused = None
    at_setting = current >= settings.parallelism
    return replace(
        state,
        effective=None if at_setting else current,
        streak=streak,
        paused_until=paused,
        slow_start=slow and not at_setting,
    )
