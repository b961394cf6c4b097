"""A fault in effect on an endpoint: when it took effect, how many calls it has seen, and the
per-call draws (cold or ready, error or not, how much latency).

Why: ``Fault`` is frozen data; "cold for the first 10 s", "5 % of calls fail" and "lognormal
latency" need a clock, a call counter and a random generator that live as long as the fault is
in effect. A new ``ActiveFault`` is made whenever a fault takes effect (emulator start,
``set_fault`` / admin PUT, ``reset``), so windows and counts start there. With ``Fault.seed``
set, the draws are the same on every run that makes the same calls in the same order.

Every invocation (InvokeEndpoint, the response stream, the bidirectional stream,
InvokeEndpointAsync) calls ``decide`` exactly once, before any response byte.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from sagewire.emulator import errors
from sagewire.emulator.errors import ApiError
from sagewire.emulator.faults import (
    DropConnection,
    ErrorKind,
    Fault,
    FixedLatency,
    Latency,
    UniformLatency,
    error_for,
)
from sagewire.emulator.stats import EndpointStats


@dataclass(frozen=True)
class Decision:
    """What one call gets: ``latency_s`` of waiting, then ``error`` (None: served normally).
    ``cold`` marks a ModelNotReady answer from ``cold_for_s`` / ``cold_for_calls``."""

    latency_s: float = 0.0
    error: ErrorKind | None = None
    cold: bool = False

    @property
    def injected(self) -> bool:
        return self.cold or self.error is not None


def draw_latency_ms(latency: Latency, rng: random.Random) -> float:
    """One draw from ``latency``, in milliseconds."""
    if isinstance(latency, FixedLatency):
        return latency.ms
    if isinstance(latency, UniformLatency):
        return rng.uniform(latency.min_ms, latency.max_ms)
    draw = rng.lognormvariate(math.log(latency.median_ms), latency.sigma)
    return min(draw, latency.max_ms)


def count(stats: EndpointStats, decision: Decision) -> None:
    """Count one call's fault decision in the endpoint's stats."""
    if decision.injected:
        stats.faults_injected += 1
    if decision.cold:
        stats.cold_answers += 1
    if decision.error == "connection_drop":
        stats.connections_dropped += 1


class ActiveFault:
    """``fault`` in effect since ``clock()`` at construction (seconds, monotonic)."""

    def __init__(self, fault: Fault, clock: Callable[[], float] = time.monotonic) -> None:
        self.fault = fault
        self._clock = clock
        self.since = clock()
        self.calls = 0
        self._rng = random.Random(fault.seed)  # None: seeded from the OS

    def is_cold(self) -> bool:
        """Whether the next call would be answered ModelNotReady (does not count a call)."""
        fault = self.fault
        if fault.cold_for_s is not None:
            return self._clock() - self.since < fault.cold_for_s
        if fault.cold_for_calls is not None:
            return self.calls < fault.cold_for_calls
        return False

    def decide(self) -> Decision:
        """Count one call and draw what it gets. The draws happen in the same order on every
        call (latency, then the error coin), so a seeded fault repeats exactly."""
        cold = self.is_cold()
        self.calls += 1
        if cold:  # a cold endpoint answers at once: no latency, no other error
            return Decision(cold=True)
        fault = self.fault
        latency_ms = float(fault.latency_ms)
        if fault.latency is not None:
            latency_ms = draw_latency_ms(fault.latency, self._rng)
        error = fault.error
        if fault.error_first_calls is not None and self.calls > fault.error_first_calls:
            error = None
        if fault.error_rate is not None:
            coin = self._rng.random()
            if coin >= fault.error_rate:
                error = None
        return Decision(latency_s=latency_ms / 1000, error=error)

    def api_error(self, decision: Decision, endpoint: str) -> ApiError | None:
        """The error answer for ``decision`` (None when served, or for a connection drop)."""
        if decision.cold:
            return errors.simple_error("model_not_ready")
        if decision.error is None:
            return None
        return error_for(self.fault.model_copy(update={"error": decision.error}), endpoint)

    async def apply(self, endpoint: str, stats: EndpointStats) -> Decision:
        """Before the model runs: decide, wait the latency, then raise the injected error
        (``ApiError``, or ``DropConnection`` for ``connection_drop``; a model timeout answers
        only after ``timeout_after_ms``, as SageMaker answers after its 60 s). Counts
        ``stats.faults_injected`` / ``cold_answers``."""
        decision = self.decide()
        count(stats, decision)
        if decision.latency_s:
            await asyncio.sleep(decision.latency_s)
        if decision.error == "connection_drop":
            raise DropConnection
        err = self.api_error(decision, endpoint)
        if err is not None:
            if decision.error == "model_timeout":
                await asyncio.sleep(self.fault.timeout_after_ms / 1000)
            raise err
        return decision
