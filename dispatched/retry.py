"""The retry policy: how long to wait before the next attempt (DESIGN.md §6)."""

from __future__ import annotations

import random
from collections.abc import Sequence

#: A Retry-After header is honoured up to this many seconds.
RETRY_AFTER_CAP = 3600.0


def delay(
    retry_number: int,
    delays: Sequence[float],
    max_delay: float,
    jitter: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before retry ``retry_number`` (1 = the first retry).

    ``delays`` gives the first retries (default 30 s, 2 min, 5 min); past its end the delay
    doubles from the last value, capped at ``max_delay``; then ±``jitter`` (a fraction) is
    applied. A receiver's Retry-After (429/503) is a floor: never retry earlier than it says
    (capped at one hour).
    """
    if retry_number < 1:
        raise ValueError(f"retry_number must be 1 or more, got {retry_number!r}")
    if retry_number <= len(delays):
        base = delays[retry_number - 1]
    else:
        last = delays[-1] if delays else 1.0
        base = last * 2 ** (retry_number - len(delays))
    base = min(base, max_delay)
    if jitter:
        base *= 1 + (rng or random).uniform(-jitter, jitter)
    if retry_after is not None:
        base = max(base, min(retry_after, RETRY_AFTER_CAP))
    return max(base, 0.0)
