"""The circuit breaker's state machine and the cold-start backoff, on a fake clock."""

from __future__ import annotations

import random

import pytest

from sagewire.config.resilience import CircuitBreakerSettings, ColdStartSettings
from sagewire.core.circuit_breaker import CircuitBreaker, CircuitState
from sagewire.core.cold_start import backoff_s
from sagewire.core.errors import ErrorKind, SagewireError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _breaker(clock: Clock, **settings: object) -> tuple[CircuitBreaker, list[CircuitState]]:
    seen: list[CircuitState] = []
    breaker = CircuitBreaker(
        CircuitBreakerSettings.model_validate(settings),
        "e",
        clock=clock,
        listener=lambda _, state: seen.append(state),
    )
    return breaker, seen


def _upstream(reason: str = "THROTTLED") -> SagewireError:
    return SagewireError("x", ErrorKind.RESOURCE_EXHAUSTED, reason)


def test_consecutive_counted_failures_open_and_an_answer_resets_the_count() -> None:
    clock = Clock()
    breaker, seen = _breaker(clock, failure_threshold=3, open_s=10)
    for _ in range(2):
        breaker.record(breaker.admit(), _upstream())
    breaker.record(breaker.admit(), None)  # an answer: the count starts again
    for _ in range(2):
        breaker.record(breaker.admit(), _upstream("UPSTREAM_READ_TIMEOUT"))
    assert breaker.state is CircuitState.CLOSED
    breaker.record(breaker.admit(), _upstream("RUNTIME_UNREACHABLE"))
    assert (breaker.state, seen) == (CircuitState.OPEN, [CircuitState.OPEN])
    clock.now += 4
    with pytest.raises(SagewireError) as caught:
        breaker.admit()
    assert (caught.value.reason, caught.value.retry_after_s) == ("CIRCUIT_OPEN", 6.0)
    assert caught.value.kind is ErrorKind.UNAVAILABLE


@pytest.mark.parametrize(
    "reason", ["MODEL_ERROR", "MODEL_TIMEOUT", "MODEL_NOT_READY", "SAGEMAKER_VALIDATION"]
)
def test_answers_of_a_working_endpoint_never_open_it(reason: str) -> None:
    breaker, _ = _breaker(Clock(), failure_threshold=1)
    for _ in range(5):
        breaker.record(breaker.admit(), _upstream(reason))
    assert breaker.view().consecutive_failures == 0
    assert breaker.state is CircuitState.CLOSED


def test_half_open_lets_only_the_probes_through_and_their_outcome_decides() -> None:
    clock = Clock()
    breaker, seen = _breaker(clock, failure_threshold=1, open_s=5, half_open_probes=2)
    breaker.record(breaker.admit(), _upstream())
    clock.now += 5
    assert breaker.view().state is CircuitState.HALF_OPEN
    first, second = breaker.admit(), breaker.admit()
    assert first
    assert second
    with pytest.raises(SagewireError, match="probe calls"):
        breaker.admit()
    breaker.record(first, None)
    assert breaker.view().state is CircuitState.HALF_OPEN  # one of two successes
    breaker.record(second, None)
    assert breaker.state is CircuitState.CLOSED
    assert seen == [CircuitState.OPEN, CircuitState.HALF_OPEN, CircuitState.CLOSED]


def test_a_failed_probe_reopens_and_a_cancelled_one_frees_its_place() -> None:
    clock = Clock()
    breaker, _ = _breaker(clock, failure_threshold=1, open_s=5)
    breaker.record(breaker.admit(), _upstream())
    clock.now += 5
    breaker.record(breaker.admit(), TimeoutError())  # says nothing: the place is free again
    probe = breaker.admit()
    breaker.record(probe, _upstream())
    assert breaker.state is CircuitState.OPEN
    assert breaker.view().half_open_in_s == 5.0


def test_a_disabled_breaker_never_opens() -> None:
    breaker, seen = _breaker(Clock(), enabled=False, failure_threshold=1)
    for _ in range(3):
        breaker.record(breaker.admit(), _upstream())
    assert (breaker.state, seen) == (CircuitState.CLOSED, [])


def test_backoff_is_jittered_under_an_exponential_ceiling() -> None:
    settings = ColdStartSettings(initial_backoff_s=0.5, max_backoff_s=4, min_backoff_s=0.1)
    rng = random.Random(7)
    for attempt, ceiling in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (10, 4.0), (400, 4.0)]:
        waits = [backoff_s(settings, attempt, rng) for _ in range(200)]
        assert all(0.1 <= wait <= ceiling for wait in waits)
        assert max(waits) > ceiling * 0.8  # spread over the range, not a constant
