"""What code below the edge reports about the current call, in its own terms.

Each function is a no-op outside a call or when metrics are off, so the core can call them
unconditionally. The model label is the current call's route (sagewire.observability.calls).
Counts and gauge moves go to `Metrics.pending` sums (applied before every scrape), not to the
instruments one by one; a gauge's `set` is applied at once.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from sagewire.observability.calls import current_metrics
from sagewire.observability.metrics import Metrics


def rejected(reason: str) -> None:
    """A route's own limit refused the call (reason: its ErrorInfo reason)."""
    found = current_metrics()
    if found is not None:
        metrics, model = found
        metrics.pending(metrics.route_rejections, model, reason).inc()


def concurrency_limit(limit: int) -> None:
    """The route's adaptive concurrency limit moved to `limit` (sagewire.core.admission)."""
    found = current_metrics()
    if found is not None:
        metrics, model = found
        metrics.child(metrics.route_concurrency_limit, model).set(limit)


_CIRCUIT_VALUES = {"closed": 0, "half_open": 1, "open": 2}


def circuit_changed(endpoint: str, state: str) -> None:
    """A circuit breaker of the current route entered `state` (closed, half_open, open)."""
    found = current_metrics()
    if found is not None:
        metrics, model = found
        metrics.circuit_state.labels(model, endpoint).set(_CIRCUIT_VALUES[state])
        metrics.pending(metrics.circuit_transitions, model, endpoint, state).inc()


def cold_start(outcome: str) -> None:
    """A ModelNotReady answer was waited out (retried) or ended the wait (gave_up)."""
    found = current_metrics()
    if found is not None:
        metrics, model = found
        metrics.pending(metrics.cold_start_attempts, model, outcome).inc()


def fallback_answered(endpoint: str) -> None:
    """A fallback endpoint of the current route answered the call."""
    found = current_metrics()
    if found is not None:
        metrics, model = found
        metrics.pending(metrics.fallback_answers, model, endpoint).inc()


def in_flight() -> Any:
    """The route's in-flight gauge (inc/dec it around the held slot: the two net out in its
    pending sum), or None."""
    found = current_metrics()
    if found is None:
        return None
    metrics, model = found
    return metrics.pending(metrics.route_in_flight, model)


def relayed(parts: AsyncIterator[bytes], opened: float) -> AsyncIterator[bytes]:
    """`parts`, counted as they are relayed; `opened` is time.perf_counter() when the
    SageMaker stream was requested, for the time to its first part."""
    found = current_metrics()
    if found is None:
        return parts
    return _relayed(parts, opened, *found)


async def _relayed(
    parts: AsyncIterator[bytes], opened: float, metrics: Metrics, model: str
) -> AsyncIterator[bytes]:
    counter = metrics.pending(metrics.stream_parts, model)
    first = True
    async for part in parts:
        if first:
            first_part = metrics.pending_histogram(metrics.stream_first_part, model)
            first_part.observe(time.perf_counter() - opened)
            first = False
        counter.inc()
        yield part


def parts_relayed(count: int = 1) -> None:
    """Parts relayed outside `relayed` (bidirectional streams)."""
    found = current_metrics()
    if found is not None:
        metrics, model = found
        metrics.pending(metrics.stream_parts, model).inc(count)


class ConverseReport:
    """One Converse call's session gauge and turn outcomes."""

    def __init__(self) -> None:
        self._found = current_metrics()
        self._open: Any = None

    def opened(self) -> None:
        if self._found is not None and self._open is None:
            metrics, _ = self._found
            # The model resolved after the call started: read the label now.
            found = current_metrics()
            model = found[1] if found is not None else ""
            self._open = metrics.pending(metrics.converse_open, model)
            self._open.inc()
            self._metrics = metrics
            self._model = model

    def turn(self, outcome: str) -> None:
        """A turn ended: outcome OK or its ErrorInfo reason."""
        if self._open is not None:
            self._metrics.pending(self._metrics.converse_turns, self._model, outcome).inc()

    def ended(self) -> None:
        if self._open is not None:
            self._open.dec()
            self._open = None


def job_submitted() -> None:
    found = current_metrics()
    if found is not None:
        metrics, model = found
        metrics.pending(metrics.async_submitted, model).inc()


def job_finished(state: str) -> None:
    """A terminal job state (completed, failed, expired) reported to a caller."""
    found = current_metrics()
    if found is not None:
        metrics, model = found
        metrics.pending(metrics.async_finished, model, state).inc()


def uploaded(size: int) -> None:
    found = current_metrics()
    if found is not None:
        metrics, model = found
        metrics.pending(metrics.uploaded_bytes, model).inc(size)
