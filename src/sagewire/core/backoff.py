"""Capped exponential backoff with jitter, for polling. Pure."""

from __future__ import annotations

from collections.abc import Callable


def backoff_delay(
    attempt: int, initial_s: float, max_s: float, random: Callable[[], float]
) -> float:
    """Seconds to wait before poll number `attempt + 1` (attempt counts from 0).

    The base doubles per attempt up to `max_s`; the wait is drawn from [base/2, base] ("equal
    jitter"), so many watchers started together spread out but none polls much sooner than
    planned.
    """
    base = min(max_s, initial_s * 2.0 ** min(attempt, 62))
    return base / 2 + random() * base / 2
