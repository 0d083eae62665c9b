"""Time in one place: aware UTC datetimes, ISO-8601 rendering and parsing."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


def isoformat(value: datetime | None) -> str | None:
    """Render as ISO-8601 UTC with milliseconds and ``Z``, e.g. ``2026-01-02T03:04:05.678Z``."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def parse_iso(text: str) -> datetime:
    """Parse ISO-8601 (``Z``, offset or naive = UTC) into an aware UTC datetime.

    Raises:
        ValueError: the text is not an ISO-8601 timestamp.
    """
    if not isinstance(text, str) or not text or len(text) > 64:
        raise ValueError(f"expected an ISO-8601 timestamp, got {text!r}")
    raw = text.strip()
    if raw.endswith(("z", "Z")):
        raw = raw[:-1] + "+00:00"
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"expected an ISO-8601 timestamp, got {text!r}") from None
    if "T" not in raw and " " not in raw:
        raise ValueError(f"expected a date and a time, got {text!r}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError(f"timestamp out of range: {text!r}") from None


def ceil_second(value: datetime) -> datetime:
    """Round up to the next whole second (rq-scheduler keeps whole seconds)."""
    if value.microsecond == 0:
        return value
    return value.replace(microsecond=0) + timedelta(seconds=1)


def month_key(value: datetime) -> str:
    """Return the UTC month of a datetime as ``YYYY-MM`` (the quota period)."""
    return value.astimezone(UTC).strftime("%Y-%m")


def next_month_start(value: datetime) -> datetime:
    """Return midnight UTC on the first day of the month after ``value``."""
    value = value.astimezone(UTC)
    year, month = (value.year + 1, 1) if value.month == 12 else (value.year, value.month + 1)
    return datetime(year, month, 1, tzinfo=UTC)


def seconds_until(value: datetime, now: datetime | None = None) -> int:
    """Whole seconds from now until ``value`` (at least 1)."""
    delta = (value - (now or utcnow())).total_seconds()
    return max(1, math.ceil(delta))
