"""Admission to a route: its concurrency limit, a short wait for a slot, then load shedding.

A route lets `limit` calls in flight at once: its static `max_concurrency`, or, with
`admission.adaptive`, the lower limit a GradientLimiter (sagewire.core.limiter) keeps from the
endpoint's latency. A call over the limit waits, in arrival order, up to `admission.max_wait_ms`
for a slot; then it is shed with UNAVAILABLE and RetryInfo (so gRPC retry policies, which retry
UNAVAILABLE and wait the `grpc-retry-pushback-ms` trailer, come back later), reason
ROUTE_CONCURRENCY_LIMIT when the static cap is full and ROUTE_OVERLOADED when the adaptive limit
is. UNAVAILABLE, not RESOURCE_EXHAUSTED: the overload is this replica's right now, so the same
call may succeed in a moment or on another replica; per-caller quotas (sagewire.security.quotas)
stay RESOURCE_EXHAUSTED, since only the caller slowing down helps there.

The retry delay is `admission.retry_after_ms` jittered ±50 %, so callers shed together do not
come back together (a gRPC client waits the pushback exactly).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from contextlib import suppress
from contextvars import ContextVar
from typing import Any

from sagewire.config.settings import RouteSettings
from sagewire.core.errors import ErrorKind, SagewireError
from sagewire.core.limiter import GradientLimiter, LimiterSettings
from sagewire.observability import signals

STATIC_LIMIT = "ROUTE_CONCURRENCY_LIMIT"
ADAPTIVE_LIMIT = "ROUTE_OVERLOADED"


class Admitted:
    """One admitted call. `answered()` when the endpoint's answer starts (a stream opened): the
    latency sample ends there, not when a long stream does. Unary calls need not call it."""

    __slots__ = ("_answered", "admitted_at", "sampled")

    def __init__(self, admitted_at: float) -> None:
        self.admitted_at = admitted_at
        self._answered: float | None = None
        self.sampled = True

    def answered(self) -> None:
        if self._answered is None:
            self._answered = time.monotonic()


# The slot the current call holds (set on admission; a later call in the task sets its own).
_current: ContextVar[Admitted | None] = ContextVar("sagewire_admitted", default=None)


def not_a_latency_sample() -> None:
    """Keep the current call out of its route's adaptive limit: its latency is not the
    endpoint's queueing (it waited out a cold start, or a fallback endpoint answered)."""
    admitted = _current.get()
    if admitted is not None:
        admitted.sampled = False


class Admission:
    """The concurrency limit of one route, its waiting callers, and its shedding."""

    def __init__(self, name: str, settings: RouteSettings, rng: random.Random | None = None):
        self.name = name
        self._cap = settings.max_concurrency
        policy = settings.admission
        self._max_wait_s = policy.wait_ms / 1000
        self._retry_after_s = policy.retry_after_ms / 1000
        self._rng = rng or random.Random()
        self.limiter = (
            GradientLimiter(
                LimiterSettings(
                    min_limit=min(policy.min_limit, self._cap),
                    max_limit=self._cap,
                    tolerance=policy.tolerance,
                    update_interval_s=policy.update_interval_ms / 1000,
                    probe_interval_s=policy.probe_interval_s,
                    probe_samples=policy.probe_samples,
                )
            )
            if policy.adaptive
            else None
        )
        self.in_flight = 0
        self._waiting: deque[asyncio.Future[None]] = deque()

    @property
    def limit(self) -> int:
        return self.limiter.limit if self.limiter is not None else self._cap

    def slot(self) -> _Slot:
        """Hold one of the route's slots for the block, waiting up to max_wait_ms for one;
        raises UNAVAILABLE (ROUTE_CONCURRENCY_LIMIT / ROUTE_OVERLOADED) when none came."""
        return _Slot(self)

    def _sample(self, admitted: Admitted) -> None:
        assert self.limiter is not None
        now = time.monotonic()
        ended = admitted._answered or now
        before = self.limiter.limit
        self.limiter.sample(ended - admitted.admitted_at, self.in_flight, now, admitted.admitted_at)
        if self.limiter.limit != before:
            signals.concurrency_limit(self.limiter.limit)
            self._wake()

    async def _acquire(self) -> None:
        if self.in_flight < self.limit and not self._waiting:
            self.in_flight += 1
            return
        if self._max_wait_s <= 0:
            raise self._shed()
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(granted)
        try:
            async with asyncio.timeout(self._max_wait_s):
                await granted
        except TimeoutError:
            if granted.done() and not granted.cancelled():
                return  # the slot came as the wait ended: it is ours
            self._forget(granted)
            raise self._shed() from None
        except asyncio.CancelledError:  # the caller went away while waiting
            if granted.done() and not granted.cancelled():
                self._release()
            else:
                self._forget(granted)
            raise

    def _forget(self, granted: asyncio.Future[None]) -> None:
        with suppress(ValueError):  # already handed a slot and removed by _wake
            self._waiting.remove(granted)

    def _release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        """Hand free slots to waiting callers, first come first served."""
        while self._waiting and self.in_flight < self.limit:
            granted = self._waiting.popleft()
            if granted.done():  # cancelled while waiting
                continue
            self.in_flight += 1
            granted.set_result(None)

    def _shed(self) -> SagewireError:
        static = self.limit >= self._cap
        reason = STATIC_LIMIT if static else ADAPTIVE_LIMIT
        signals.rejected(reason)
        retry_after = round(self._retry_after_s * self._rng.uniform(0.5, 1.5), 3)
        why = (
            f"already has {self._cap} calls in flight (max_concurrency)"
            if static
            else f"is overloaded: its endpoint's latency holds it to {self.limit} calls in flight"
        )
        return SagewireError(
            message=f"model {self.name!r} {why}; retry after {retry_after:g}s",
            kind=ErrorKind.UNAVAILABLE,
            reason=reason,
            retry_after_s=retry_after,
            metadata={"model": self.name, "limit": str(self.limit)},
        )


class _Slot:
    """Admission.slot's context manager: a class rather than @asynccontextmanager, which costs
    a generator and two extra awaits on every call's path."""

    __slots__ = ("_admission", "_admitted", "_gauge", "_token")

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self._gauge: Any = None

    async def __aenter__(self) -> Admitted:
        await self._admission._acquire()
        admitted = self._admitted = Admitted(time.monotonic())
        self._token = _current.set(admitted)
        self._gauge = gauge = signals.in_flight()
        if gauge is not None:
            gauge.inc()
        return admitted

    async def __aexit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if self._gauge is not None:
            self._gauge.dec()
        admission = self._admission
        admitted = self._admitted
        try:
            # Only a block that ended normally is a latency sample.
            if kind is None and admitted.sampled and admission.limiter is not None:
                admission._sample(admitted)
        finally:  # the slot comes back whatever the sample did
            _current.reset(self._token)
            admission._release()
