"""A circuit breaker per endpoint: stop sending to an endpoint that keeps failing upstream.

States (docs/resilience.md):
- closed: calls pass; `failure_threshold` consecutive upstream failures open the circuit;
- open: calls fail fast with UNAVAILABLE (reason CIRCUIT_OPEN) and RetryInfo = the time until
  the circuit half-opens (`open_s` after it opened);
- half-open: up to `half_open_probes` calls pass at once as probes; that many successes close
  the circuit, one failure opens it again; calls beyond the probes fail fast.

Only failures that say the endpoint or SageMaker is in trouble count (`COUNTED`): SageMaker's
own 5xx answers, throttling, connection failures and read timeouts. The model's own answers
(ModelError, whatever its status), validation errors and a cold start (ModelNotReady, waited
out by sagewire.core.cold_start) are answers from a working endpoint and count as successes.
A call cut short by its caller (cancelled, deadline) says nothing about the endpoint.

Why our own: the few Python breakers (pybreaker, aiobreaker, circuitbreaker) count every
exception, have no half-open probe limit or no asyncio support, and would still need this
classification; the state machine itself is ~60 lines.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from sagewire.config.resilience import CircuitBreakerSettings
from sagewire.core.errors import ErrorKind, SagewireError

# ErrorInfo reasons (sagewire.aws.error_table, sagewire.aws.errors) of upstream failures.
COUNTED = frozenset(
    {
        "SAGEMAKER_UNAVAILABLE",
        "SAGEMAKER_DEPENDENCY_FAILURE",
        "SAGEMAKER_INTERNAL_FAILURE",
        "SAGEMAKER_STREAM_FAILURE",
        "THROTTLED",
        "RUNTIME_UNREACHABLE",
        "UPSTREAM_TLS_FAILURE",
        "UPSTREAM_CONNECTION_LOST",
        "UPSTREAM_READ_TIMEOUT",
    }
)
CIRCUIT_OPEN = "CIRCUIT_OPEN"


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class CircuitView:
    """A breaker's state as ModelService shows it."""

    state: CircuitState
    consecutive_failures: int
    # Seconds until an open circuit half-opens; 0 otherwise.
    half_open_in_s: float


# Called on every state change: (breaker, new state).
Listener = Callable[["CircuitBreaker", CircuitState], None]


class CircuitBreaker:
    """One endpoint's breaker (not thread-safe: one event loop). `clock` is monotonic seconds."""

    def __init__(
        self,
        settings: CircuitBreakerSettings,
        endpoint: str,
        variant: str = "",
        clock: Callable[[], float] = time.monotonic,
        listener: Listener | None = None,
    ) -> None:
        self.settings = settings
        self.endpoint = endpoint
        self.variant = variant
        self._clock = clock
        self._listener = listener
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probes = 0  # probe calls in flight (half-open)
        self._probe_successes = 0

    @property
    def state(self) -> CircuitState:
        if self._state is CircuitState.OPEN and self._half_open_in() <= 0:
            self._move(CircuitState.HALF_OPEN)
        return self._state

    def view(self) -> CircuitView:
        state = self.state
        wait = self._half_open_in() if state is CircuitState.OPEN else 0.0
        return CircuitView(state, self._failures, max(wait, 0.0))

    def _half_open_in(self) -> float:
        return self._opened_at + self.settings.open_s - self._clock()

    def _move(self, state: CircuitState) -> None:
        self._state = state
        if state is CircuitState.OPEN:
            self._opened_at = self._clock()
        if state is not CircuitState.CLOSED:
            self._probes = self._probe_successes = 0
        if self._listener is not None:
            self._listener(self, state)

    def admit(self) -> bool:
        """Take a pass for one call, or raise CIRCUIT_OPEN. Returns whether the call is a
        probe; report its outcome with `succeeded`, `failed` or `released`, exactly once."""
        if not self.settings.enabled:
            return False
        state = self.state
        if state is CircuitState.CLOSED:
            return False
        if state is CircuitState.HALF_OPEN and self._probes < self.settings.half_open_probes:
            self._probes += 1
            return True
        raise self._open_error(state)

    def _open_error(self, state: CircuitState) -> SagewireError:
        if state is CircuitState.OPEN:
            wait = max(self._half_open_in(), 0.001)
            why = f"it half-opens in {wait:.3g}s"
        else:  # half-open, probes busy: their outcome decides within one call's time
            wait = min(1.0, self.settings.open_s)
            why = "probe calls are testing it now"
        target = f"{self.endpoint!r}" + (f" (variant {self.variant!r})" if self.variant else "")
        metadata = {"endpoint": self.endpoint, "circuit_state": state.value}
        if self.variant:
            metadata["target_variant"] = self.variant
        return SagewireError(
            message=f"the circuit to endpoint {target} is open after "
            f"{self.settings.failure_threshold} consecutive upstream failures; {why}",
            kind=ErrorKind.UNAVAILABLE,
            reason=CIRCUIT_OPEN,
            retry_after_s=wait,
            metadata=metadata,
        )

    def succeeded(self, probe: bool) -> None:
        """The endpoint answered (a model error is an answer)."""
        if probe:
            self._probes = max(self._probes - 1, 0)
            if self._state is CircuitState.HALF_OPEN:
                self._probe_successes += 1
                if self._probe_successes >= self.settings.half_open_probes:
                    self._failures = 0
                    self._move(CircuitState.CLOSED)
            return
        if self._state is CircuitState.CLOSED:
            self._failures = 0

    def failed(self, probe: bool) -> None:
        """An upstream failure of a `COUNTED` kind."""
        if not self.settings.enabled:
            return
        self._failures += 1
        if probe:
            self._probes = max(self._probes - 1, 0)
            if self._state is CircuitState.HALF_OPEN:
                self._move(CircuitState.OPEN)
            return
        if self._state is CircuitState.CLOSED and self._failures >= self.settings.failure_threshold:
            self._move(CircuitState.OPEN)

    def released(self, probe: bool) -> None:
        """The call ended without saying anything about the endpoint (cancelled, deadline)."""
        if probe:
            self._probes = max(self._probes - 1, 0)

    def record(self, probe: bool, error: BaseException | None) -> None:
        """`succeeded`, `failed` or `released`, by what the call ended with."""
        if error is None:
            self.succeeded(probe)
        elif isinstance(error, SagewireError):
            if error.reason in COUNTED:
                self.failed(probe)
            else:
                self.succeeded(probe)
        else:
            self.released(probe)
