"""Per-caller quotas: a token bucket (requests per second) and a count of calls in flight per
key, where a key is a principal or a principal × route. Past either limit the call fails with
RESOURCE_EXHAUSTED, a QuotaFailure naming the quota, and a RetryInfo saying when a retry may
pass. Pure and single-threaded (the event loop's); per replica, not shared across replicas.

Own code rather than a library: the buckets are a few lines, and they must release slots at
the end of a call (the concurrency half), which rate-limit libraries do not model.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from sagewire.config.security import QuotaLimits
from sagewire.core.errors import ErrorKind, QuotaViolation, SagewireError

# Retry advice for a full concurrency quota: a call's end is not predictable, so a short wait.
_CONCURRENCY_RETRY_S = 0.2


@dataclass(slots=True)
class _Usage:
    tokens: float
    refilled_at: float
    in_flight: int = 0


def quota_exceeded(subject: str, description: str, retry_after_s: float) -> SagewireError:
    return SagewireError(
        message=f"quota exceeded: {description}; retry in {retry_after_s:.3g}s",
        kind=ErrorKind.RESOURCE_EXHAUSTED,
        reason="QUOTA_EXCEEDED",
        retry_after_s=retry_after_s,
        quota_violations=(QuotaViolation(subject, description),),
    )


class Quotas:
    """Usage per key, the least recently used forgotten past `max_keys` (only idle ones: a key
    with calls in flight is kept, or its releases would be lost)."""

    def __init__(self, max_keys: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._max_keys = max_keys
        self._clock = clock
        self._usage: OrderedDict[str, _Usage] = OrderedDict()

    def admit(self, key: str, limits: QuotaLimits, what: str) -> Callable[[], None] | None:
        """Take one request token and one concurrency slot for `key`; the returned function
        gives the slot back (None when there is no concurrency limit)."""
        if not limits.rps and not limits.max_concurrency:
            return None
        now = self._clock()
        usage = self._usage.get(key)
        if usage is None:
            usage = self._usage[key] = _Usage(float(limits.burst), now)
            self._forget_idle()
        else:
            self._usage.move_to_end(key)
        if limits.max_concurrency and usage.in_flight >= limits.max_concurrency:
            raise quota_exceeded(
                key,
                f"{what} allows {limits.max_concurrency} calls in flight",
                _CONCURRENCY_RETRY_S,
            )
        if limits.rps:
            usage.tokens = min(
                float(limits.burst), usage.tokens + (now - usage.refilled_at) * limits.rps
            )
            usage.refilled_at = now
            if usage.tokens < 1.0:
                raise quota_exceeded(
                    key,
                    f"{what} allows {limits.rps:g} requests per second",
                    (1.0 - usage.tokens) / limits.rps,
                )
            usage.tokens -= 1.0
        if not limits.max_concurrency:
            return None
        usage.in_flight += 1

        def release() -> None:
            usage.in_flight -= 1

        return release

    def _forget_idle(self) -> None:
        excess = len(self._usage) - self._max_keys
        if excess <= 0:
            return
        for key in [k for k, u in self._usage.items() if u.in_flight == 0][:excess]:
            del self._usage[key]
