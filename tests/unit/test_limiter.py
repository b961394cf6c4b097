"""The adaptive concurrency limit (sagewire.core.limiter), driven by a simulated endpoint.

The simulated endpoint serves `capacity` calls at once in `service_s` each; calls beyond that
queue, so latency = service_s × max(1, in_flight / capacity): the shape of a model container
with a fixed number of workers. No clock: time is the simulation's.
"""

from __future__ import annotations

import random

from sagewire.core.limiter import GradientLimiter, LimiterSettings

SETTINGS = LimiterSettings(
    min_limit=4,
    max_limit=64,
    tolerance=0.25,
    update_interval_s=0.1,
    probe_interval_s=30,
    probe_samples=16,
)


def _probing(limiter: GradientLimiter) -> bool:
    return limiter.probing  # a call, so that mypy does not narrow across samples


def _latency(in_flight: int, capacity: int, service_s: float) -> float:
    return service_s * max(1.0, in_flight / capacity)


def _run(
    limiter: GradientLimiter,
    capacity: int,
    service_s: float,
    seconds: float,
    start: float = 0.0,
    offered: int = 10_000,
) -> list[tuple[float, int]]:
    """Saturating load (always `offered` callers, so the route runs at its limit), one batch of
    completions per service time; returns (time, limit) after each batch."""
    now, trace = start, []
    while now < start + seconds:
        in_flight = min(offered, limiter.limit)
        latency = _latency(in_flight, capacity, service_s)
        now += latency
        for _ in range(in_flight):
            limiter.sample(latency, in_flight, now)
        trace.append((now, limiter.limit))
    return trace


def test_it_starts_by_measuring_the_unloaded_latency_at_min_limit() -> None:
    limiter = GradientLimiter(SETTINGS, rng=random.Random(1))
    assert _probing(limiter)
    assert limiter.limit == 4
    for _ in range(15):
        limiter.sample(0.1, 4, 0.1)
    assert _probing(limiter)
    limiter.sample(0.1, 4, 0.1)
    assert not _probing(limiter)
    assert limiter.min_rtt == 0.1
    assert limiter.limit == 64  # back to where it was: max_concurrency


def test_an_overloaded_endpoint_brings_the_limit_near_its_capacity() -> None:
    limiter = GradientLimiter(SETTINGS, rng=random.Random(1))
    trace = _run(limiter, capacity=8, service_s=0.1, seconds=20)
    late = [limit for t, limit in trace if t > 5]
    # Near capacity (8), with room for the tolerance and the probe: latency stays near minRTT.
    assert min(late) >= 4
    assert max(late) <= 8 * 1.25 + 3
    mean = sum(late) / len(late)
    assert 8 <= mean <= 12


def test_the_limit_grows_back_when_the_endpoint_gains_capacity() -> None:
    limiter = GradientLimiter(SETTINGS, rng=random.Random(1))
    _run(limiter, capacity=8, service_s=0.1, seconds=10)
    assert limiter.limit <= 13
    # The endpoint scaled out: latency stays at minRTT however many calls run.
    trace = _run(limiter, capacity=1000, service_s=0.1, seconds=15, start=10)
    assert trace[-1][1] == 64


def test_an_idle_route_does_not_raise_its_limit() -> None:
    limiter = GradientLimiter(SETTINGS, rng=random.Random(1))
    _run(limiter, capacity=8, service_s=0.1, seconds=10)
    # Two callers at a time from now on: fast answers, but they prove nothing about more load.
    _run(limiter, capacity=8, service_s=0.1, seconds=2, start=10, offered=2)  # a window ends
    held = limiter.limit
    _run(limiter, capacity=8, service_s=0.1, seconds=10, start=12, offered=2)
    assert limiter.limit <= held


def test_the_baseline_is_measured_again_and_follows_a_slower_model() -> None:
    limiter = GradientLimiter(SETTINGS, rng=random.Random(1))
    _run(limiter, capacity=8, service_s=0.1, seconds=10)
    assert limiter.min_rtt == 0.1
    # The model now takes 0.3 s per call: without a new probe the limiter would read the
    # slower answers as queueing and stay at min_limit.
    _run(limiter, capacity=8, service_s=0.3, seconds=80, start=10)
    assert limiter.min_rtt is not None
    assert abs(limiter.min_rtt - 0.3) < 1e-9
    assert limiter.limit >= 8


def test_calls_admitted_before_a_probe_do_not_count_in_it() -> None:
    limiter = GradientLimiter(SETTINGS, rng=random.Random(1))
    for _ in range(16):
        limiter.sample(0.1, 4, 0.1)
    assert not _probing(limiter)
    limiter._next_probe = 0.0  # probe at the next window's end
    for _ in range(10):
        limiter.sample(0.5, 40, 1.0)  # ends the window: a probe begins at t = 1.0
    assert _probing(limiter)
    limiter.sample(2.0, 40, 1.5)  # admitted at t = -0.5, queued behind the old limit
    for _ in range(16):
        limiter.sample(0.12, 4, 2.0)
    assert limiter.min_rtt == 0.12


def test_the_limit_stays_within_its_bounds() -> None:
    limiter = GradientLimiter(SETTINGS, rng=random.Random(1))
    for _ in range(16):
        limiter.sample(0.1, 4, 0.1)
    now = 0.1
    for _ in range(200):  # latency 100× the baseline: halving per window, not below min_limit
        now += 0.2
        limiter.sample(10.0, 64, now)
        if limiter.probing:
            break
        assert 4 <= limiter.limit <= 64
    assert limiter.limit == 4
