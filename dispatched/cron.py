"""Cron expressions in a time zone, and the DST rule (DESIGN.md §13). Pure: no app, DB or Redis.

The expression is matched by ``cronsim`` on **naive local wall-clock times**, where there is no
daylight-saving time at all; each matching local time is then placed on the UTC time line with
``zoneinfo`` by our one rule:

- a local time that does not exist (the clock springs forward over it) fires once, at the first
  instant after the gap (note ``"shifted"``);
- a local time that happens twice (the clock falls back over it) fires once, at its first
  occurrence (note ``"deduplicated"``);
- local times that land on the same instant (several skipped ones, and the end of the gap
  itself) are one fire.

So the rule is the same for every expression (hourly, daily, every 15 minutes) and every zone,
30-minute shifts (Australia/Lord_Howe) included; cronsim's and croniter's own DST handling
(Debian cron's, which treats ``*`` hours differently) is not used. README, Schedules, says why.
"""

from __future__ import annotations

import functools
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cronsim import CronSim, CronSimError

from .errors import BadRequest

#: The five fields, in order, as messages name them.
FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
#: The ``@`` shorthands of Vixie/Debian cron that stand for a time (``@reboot`` does not).
ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
#: cronsim's error messages, by the field they are about.
_CRONSIM_FIELDS = {
    "Bad second": "second",
    "Bad minute": "minute",
    "Bad hour": "hour",
    "Bad day-of-month": "day-of-month",
    "Bad month": "month",
    "Bad day-of-week": "day-of-week",
}
MAX_EXPRESSION = 120
MAX_ZONE = 64
#: A local time can repeat for at most this long (the largest DST or offset change in tzdata
#: is 2 h; some margin): searching backwards starts this far past the local "now".
MAX_FOLD = timedelta(hours=3)
#: An expression that matches nothing within this many years is treated as never firing.
HORIZON_YEARS = 30

SHIFTED = "shifted"
DEDUPLICATED = "deduplicated"


@dataclass(frozen=True)
class Fire:
    """One fire time: the UTC instant, the same instant in the zone, and its DST note."""

    at: datetime
    local: datetime
    dst: str | None = None


def parse(expression: object) -> str:
    """Return the normalized 5-field expression (aliases expanded, single spaces).

    Raises:
        BadRequest: not a string, not 5 fields, a bad field (the message names it), or an
            expression that can never fire (30 February).
    """
    if not isinstance(expression, str):
        raise BadRequest(f"cron must be a string, got {expression!r}", field="cron")
    text = " ".join(expression.split())
    if not text or len(text) > MAX_EXPRESSION:
        raise BadRequest(
            f"cron must be 1-{MAX_EXPRESSION} characters, got {len(text)}", field="cron"
        )
    if text.startswith("@"):
        if text.lower() not in ALIASES:
            raise BadRequest(
                f"cron {text!r} is not a known shorthand; use one of {', '.join(ALIASES)} "
                "or 5 fields",
                field="cron",
            )
        text = ALIASES[text.lower()]
    fields = text.split(" ")
    if len(fields) != 5:
        extra = (
            " (a seconds field is not supported: a schedule fires at most once a minute)"
            if len(fields) in (6, 7)
            else ""
        )
        raise BadRequest(
            f"cron {text!r} has {len(fields)} fields; expected 5: {' '.join(FIELDS)}{extra}",
            field="cron",
        )
    try:
        CronSim(text, datetime(2000, 1, 1))
    except CronSimError as exc:
        name = _CRONSIM_FIELDS.get(str(exc))
        if name is None:
            raise BadRequest(f"cron {text!r} is not valid: {exc}", field="cron") from None
        value = fields[FIELDS.index(name)] if name in FIELDS else "?"
        if name == "day-of-month" and _valid(" ".join([*fields[:3], "*", fields[4]])):
            raise BadRequest(
                f"cron {text!r} never fires: the day-of-month field {value!r} names no day "
                f"that the month field {fields[3]!r} has",
                field="cron",
                cronField=name,
            ) from None
        raise BadRequest(
            f"cron {text!r}: the {name} field {value!r} is not valid",
            field="cron",
            cronField=name,
        ) from None
    except (ValueError, IndexError) as exc:  # defensive: anything else cronsim may raise
        raise BadRequest(f"cron {text!r} is not valid: {exc}", field="cron") from None
    return text


def _valid(expression: str) -> bool:
    try:
        CronSim(expression, datetime(2000, 1, 1))
    except (CronSimError, ValueError, IndexError):
        return False
    return True


@functools.cache
def _zone_names() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def zone_names() -> list[str]:
    """Every IANA zone name, sorted (the dashboard's suggestions)."""
    return sorted(_zone_names())


def zone(name: object) -> zoneinfo.ZoneInfo:
    """Return the IANA zone ``name`` (``UTC``, ``America/New_York``…).

    Raises:
        BadRequest: not a string, or not an IANA zone name.
    """
    if not isinstance(name, str):
        raise BadRequest(f"timezone must be an IANA zone name, got {name!r}", field="timezone")
    if name not in _zone_names():
        hint = next((z for z in _zone_names() if z.lower() == name.lower()), None)
        suggestion = f"; did you mean {hint!r}?" if hint else " such as 'Europe/Berlin'"
        raise BadRequest(
            f"timezone {name[:MAX_ZONE]!r} is not an IANA time zone name{suggestion}",
            field="timezone",
        )
    return zoneinfo.ZoneInfo(name)


def place(local: datetime, tz: zoneinfo.ZoneInfo) -> tuple[datetime, str | None]:
    """Put a naive local wall-clock time on the UTC time line by the DST rule.

    Returns the UTC instant and the note: None, ``"shifted"`` (the local time does not exist;
    the first instant after the gap) or ``"deduplicated"`` (it happens twice; the first one).
    """
    first = local.replace(tzinfo=tz, fold=0)
    second = local.replace(tzinfo=tz, fold=1)
    if first.utcoffset() == second.utcoffset():
        return first.astimezone(UTC), None
    # PEP 495: fold=0 reads the local time with the offset in force before the transition.
    # In a repeat that is the earlier instant; in a gap it is the later one.
    early, late = first.astimezone(UTC), second.astimezone(UTC)
    if early < late:
        return early, DEDUPLICATED
    return _transition(late, early, tz), SHIFTED


def _transition(before: datetime, after: datetime, tz: zoneinfo.ZoneInfo) -> datetime:
    """The first UTC instant (whole second) in ``(before, after]`` with ``after``'s offset."""
    target = after.astimezone(tz).utcoffset()
    low, high = int(before.timestamp()), int(after.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, tz).utcoffset() == target:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def _locals(expression: str, start: datetime, reverse: bool = False) -> Iterator[datetime]:
    """Naive local times matching ``expression`` strictly after (before) naive ``start``."""
    limit = start.year + (-HORIZON_YEARS if reverse else HORIZON_YEARS)
    for local in CronSim(expression, start, reverse=reverse):
        if (local.year < limit) if reverse else (local.year > limit):
            return
        yield local


def fires_after(
    expression: str, tz: zoneinfo.ZoneInfo, after: datetime, count: int = 1
) -> list[Fire]:
    """The next ``count`` fire times strictly after the instant ``after`` (fewer if the
    expression stops matching within ``HORIZON_YEARS``)."""
    start = after.astimezone(tz).replace(tzinfo=None, fold=0, microsecond=0)
    fires: list[Fire] = []
    pending: tuple[datetime, str | None] | None = None
    for local in _locals(expression, start):
        at, note = place(local, tz)
        if at <= after:
            continue  # the second occurrence of a repeated hour: already behind us
        if pending is not None and at == pending[0]:
            pending = (at, pending[1] if pending[1] == SHIFTED else note or pending[1])
            continue
        if pending is not None:
            fires.append(Fire(pending[0], pending[0].astimezone(tz), pending[1]))
            if len(fires) == count:
                return fires
        pending = (at, note)
    if pending is not None and len(fires) < count:
        fires.append(Fire(pending[0], pending[0].astimezone(tz), pending[1]))
    return fires


def next_fire(expression: str, tz: zoneinfo.ZoneInfo, after: datetime) -> Fire | None:
    """The first fire time strictly after ``after`` (None: it never fires again)."""
    fires = fires_after(expression, tz, after, 1)
    return fires[0] if fires else None


def latest_fire(expression: str, tz: zoneinfo.ZoneInfo, at_or_before: datetime) -> Fire | None:
    """The last fire time at or before the instant ``at_or_before`` (None: there is none)."""
    start = at_or_before.astimezone(tz).replace(tzinfo=None, fold=0, microsecond=0)
    # A later local time can sit on an earlier instant (a repeated hour's first occurrence), so
    # look back from a little past "now" in local terms and keep the first instant not after it.
    for local in _locals(expression, start + MAX_FOLD, reverse=True):
        at, _ = place(local, tz)
        if at <= at_or_before:
            # Its note needs the forward view (merges with neighbours): recompute it.
            [fire] = fires_after(expression, tz, at - timedelta(seconds=1), 1) or [None]
            return fire
    return None
