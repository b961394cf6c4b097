"""The emulator's per-call fault decisions (cold starts, error rates, latency distributions),
as pure logic with a fake clock and seeded draws. Over HTTP: tests/emulator/test_admin.py."""

from __future__ import annotations

import math
import random
import statistics

import pytest
from pydantic import ValidationError

from sagewire.emulator.fault_run import ActiveFault, draw_latency_ms
from sagewire.emulator.faults import Fault, LognormalLatency, UniformLatency


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_cold_for_seconds_answers_not_ready_until_the_window_ends() -> None:
    clock = FakeClock()
    active = ActiveFault(Fault(cold_for_s=10), clock=clock)
    assert [active.decide().cold for _ in range(3)] == [True, True, True]
    clock.now += 9.9
    assert active.decide().cold
    clock.now += 0.1
    assert not active.decide().cold
    error = active.api_error(ActiveFault(Fault(cold_for_s=1), clock=clock).decide(), "e")
    assert error is not None
    assert (error.status, error.code) == (429, "ModelNotReadyException")


def test_cold_for_calls_counts_from_when_the_fault_takes_effect() -> None:
    fault = Fault(cold_for_calls=2)
    active = ActiveFault(fault)
    assert [active.decide().cold for _ in range(4)] == [True, True, False, False]
    again = ActiveFault(fault)  # set_fault / PUT / reset make a new one: cold again
    assert again.is_cold()
    assert again.decide().cold


def test_a_cold_call_gets_no_latency_and_no_other_error() -> None:
    decision = ActiveFault(Fault(cold_for_calls=1, latency_ms=500, error="throttling")).decide()
    assert (decision.cold, decision.latency_s, decision.error) == (True, 0.0, None)
    assert decision.injected


def test_error_rate_fails_about_that_fraction_and_repeats_with_a_seed() -> None:
    fault = Fault(error="service_unavailable", error_rate=0.3, seed=7)
    active = ActiveFault(fault)
    draws = [active.decide().error for _ in range(10_000)]
    failed = sum(error == "service_unavailable" for error in draws)
    assert 2700 <= failed <= 3300, failed
    assert set(draws) == {None, "service_unavailable"}
    replay = ActiveFault(fault)
    assert [replay.decide().error for _ in range(10_000)] == draws


@pytest.mark.parametrize(("rate", "expected"), [(0.0, 0), (1.0, 200)])
def test_error_rate_bounds(rate: float, expected: int) -> None:
    active = ActiveFault(Fault(error="throttling", error_rate=rate))
    assert sum(active.decide().error is not None for _ in range(200)) == expected


def test_no_error_rate_means_every_call_and_error_first_calls_limits_it() -> None:
    every = ActiveFault(Fault(error="internal_failure"))
    assert all(every.decide().error == "internal_failure" for _ in range(5))
    brief = ActiveFault(Fault(error="internal_failure", error_first_calls=2))
    assert [brief.decide().error for _ in range(4)] == [
        "internal_failure",
        "internal_failure",
        None,
        None,
    ]


def test_connection_drop_has_no_error_response() -> None:
    active = ActiveFault(Fault(error="connection_drop"))
    decision = active.decide()
    assert decision.error == "connection_drop"
    assert decision.injected
    assert active.api_error(decision, "e") is None


def test_fixed_latency_ms_and_fixed_distribution() -> None:
    assert ActiveFault(Fault(latency_ms=250)).decide().latency_s == 0.25
    fixed = Fault.model_validate({"latency": {"distribution": "fixed", "ms": 40}})
    assert ActiveFault(fixed).decide().latency_s == 0.04


def test_uniform_latency_stays_in_its_bounds_and_spreads() -> None:
    latency = UniformLatency(distribution="uniform", min_ms=10, max_ms=30)
    rng = random.Random(1)
    draws = [draw_latency_ms(latency, rng) for _ in range(5000)]
    assert min(draws) >= 10
    assert max(draws) <= 30
    assert 19 <= statistics.fmean(draws) <= 21


def test_lognormal_latency_has_its_median_and_spread_and_is_capped() -> None:
    latency = LognormalLatency(distribution="lognormal", median_ms=100, sigma=0.5)
    rng = random.Random(3)
    draws = sorted(draw_latency_ms(latency, rng) for _ in range(20_000))
    assert 95 <= statistics.median(draws) <= 105
    p99 = draws[int(0.99 * len(draws))]
    expected_p99 = 100 * math.exp(2.326 * 0.5)  # the z-score of the 99th percentile
    assert 0.9 * expected_p99 <= p99 <= 1.1 * expected_p99
    capped = LognormalLatency(distribution="lognormal", median_ms=100, sigma=2, max_ms=150)
    assert max(draw_latency_ms(capped, rng) for _ in range(2000)) == 150


def test_seeded_latency_repeats() -> None:
    fault = Fault.model_validate(
        {"latency": {"distribution": "lognormal", "median_ms": 20, "sigma": 1}, "seed": 42}
    )
    first, second = ActiveFault(fault), ActiveFault(fault)
    assert [first.decide().latency_s for _ in range(50)] == [
        second.decide().latency_s for _ in range(50)
    ]


@pytest.mark.parametrize(
    ("data", "complaint"),
    [
        ({"error_rate": 0.5}, "error_rate needs an error"),
        ({"error": "throttling", "error_rate": 1.5}, "less than or equal to 1"),
        ({"cold_for_s": 5, "cold_for_calls": 3}, "not both"),
        ({"cold_for_s": -1}, "greater than or equal to 0"),
        ({"latency_ms": 5, "latency": {"distribution": "fixed", "ms": 5}}, "not both"),
        ({"latency": {"distribution": "uniform", "min_ms": 9, "max_ms": 1}}, "max_ms"),
        ({"latency": {"distribution": "pareto", "ms": 1}}, "pareto"),
        ({"latency": {"distribution": "lognormal", "median_ms": 0, "sigma": 1}}, "median_ms"),
        ({"error": "connection_reset"}, "connection_drop"),
    ],
)
def test_invalid_faults_say_what_is_wrong(data: dict[str, object], complaint: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Fault.model_validate(data)
    assert complaint in str(caught.value)
