"""Admission to a route (sagewire.core.admission): the static cap, the wait for a slot, shedding
with UNAVAILABLE + RetryInfo, and the adaptive limit. Real asyncio, no clock patched; waits are
on events, and the only timed path (a wait that runs out) uses a short max_wait_ms."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest

from sagewire.config.settings import RouteSettings
from sagewire.core.admission import Admission, not_a_latency_sample
from sagewire.core.errors import ErrorKind, SagewireError
from sagewire.core.routes import RouteTable


def admission(max_concurrency: int = 2, **policy: Any) -> Admission:
    settings = RouteSettings.model_validate(
        {"endpoint": "e", "max_concurrency": max_concurrency, "admission": policy}
    )
    return Admission("small", settings, rng=random.Random(7))


async def _until(condition: Callable[[], bool]) -> None:
    """Let other tasks run until `condition` holds (bounded: a few thousand loop turns)."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


async def test_over_the_cap_a_call_is_shed_with_unavailable_and_retry_advice() -> None:
    gate = admission(max_wait_ms=0)
    async with gate.slot(), gate.slot():
        assert gate.in_flight == 2
        with pytest.raises(SagewireError) as info:
            async with gate.slot():
                pass
    error = info.value
    assert error.kind is ErrorKind.UNAVAILABLE  # retried by the recommended service config
    assert error.reason == "ROUTE_CONCURRENCY_LIMIT"
    assert error.retry_after_s is not None
    assert 0.1 <= error.retry_after_s <= 0.3
    assert error.metadata == {"model": "small", "limit": "2"}
    assert gate.in_flight == 0


async def test_retry_delays_are_jittered_so_shed_callers_spread_out() -> None:
    gate = admission(max_concurrency=1, max_wait_ms=0, retry_after_ms=1000)
    delays = set()
    async with gate.slot():
        for _ in range(20):
            with pytest.raises(SagewireError) as info:
                async with gate.slot():
                    pass
            delays.add(info.value.retry_after_s)
    assert len(delays) > 10
    assert all(d is not None and 0.5 <= d <= 1.5 for d in delays)


async def test_a_call_over_the_limit_waits_for_a_slot_in_arrival_order() -> None:
    gate = admission(max_concurrency=1, max_wait_ms=60_000)
    order: list[int] = []
    release = asyncio.Event()

    async def call(n: int) -> None:
        async with gate.slot():
            order.append(n)
            await release.wait()

    first = asyncio.create_task(call(0))
    await _until(lambda: gate.in_flight == 1)
    waiting = [asyncio.create_task(call(n)) for n in (1, 2, 3)]
    await _until(lambda: len(gate._waiting) == 3)
    release.set()
    await asyncio.gather(first, *waiting)
    assert order == [0, 1, 2, 3]
    assert gate.in_flight == 0


async def test_a_wait_that_runs_out_is_shed() -> None:
    gate = admission(max_concurrency=1, max_wait_ms=20)
    async with gate.slot():
        with pytest.raises(SagewireError) as info:
            async with gate.slot():
                pass
    assert info.value.reason == "ROUTE_CONCURRENCY_LIMIT"
    assert not gate._waiting
    assert gate.in_flight == 0


@pytest.mark.parametrize(
    ("policy", "waits_s"),
    [
        ({}, 0.05),  # a static limit absorbs a short burst
        ({"adaptive": True}, 0.0),  # an adaptive one already lets the endpoint queue: shed
        ({"adaptive": True, "max_wait_ms": 50}, 0.05),  # as configured
        ({"max_wait_ms": 0}, 0.0),
    ],
)
def test_the_wait_for_a_slot_defaults_by_the_kind_of_limit(
    policy: dict[str, Any], waits_s: float
) -> None:
    assert admission(**policy)._max_wait_s == waits_s


async def test_an_adaptive_route_sheds_at_once_by_default() -> None:
    gate = admission(max_concurrency=1, adaptive=True, min_limit=1)

    async def second() -> None:
        async with gate.slot():
            pass

    async with gate.slot():
        shed = asyncio.create_task(second())
        for _ in range(3):  # a few turns of the loop, no time: it never queued for a slot
            await asyncio.sleep(0)
        assert shed.done()
        assert not gate._waiting
    with pytest.raises(SagewireError) as info:
        await shed
    assert info.value.reason in ("ROUTE_CONCURRENCY_LIMIT", "ROUTE_OVERLOADED")


async def test_a_caller_that_leaves_while_waiting_holds_no_slot() -> None:
    gate = admission(max_concurrency=1, max_wait_ms=60_000)
    async with AsyncExitStack() as held:
        await held.enter_async_context(gate.slot())

        async def wait() -> None:
            async with gate.slot():
                pass

        waiter = asyncio.create_task(wait())
        await _until(lambda: bool(gate._waiting))
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    assert gate.in_flight == 0
    async with gate.slot():  # the slot is free for the next caller
        assert gate.in_flight == 1


async def test_the_slot_is_released_when_the_call_fails() -> None:
    gate = admission(max_concurrency=1, max_wait_ms=0)
    with pytest.raises(RuntimeError):
        async with gate.slot():
            raise RuntimeError("upstream failed")
    assert gate.in_flight == 0
    async with gate.slot():
        assert gate.in_flight == 1


async def test_the_adaptive_limit_sheds_below_the_cap_as_route_overloaded() -> None:
    # While the limiter measures the unloaded latency it admits min_limit calls.
    gate = admission(max_concurrency=64, adaptive=True, min_limit=2, max_wait_ms=0)
    assert gate.limit == 2
    async with gate.slot(), gate.slot():
        with pytest.raises(SagewireError) as info:
            async with gate.slot():
                pass
    assert info.value.kind is ErrorKind.UNAVAILABLE
    assert info.value.reason == "ROUTE_OVERLOADED"
    assert info.value.metadata["limit"] == "2"


async def test_successful_calls_feed_the_limiter_and_failed_ones_do_not() -> None:
    gate = admission(max_concurrency=64, adaptive=True, min_limit=2, probe_samples=3)
    assert gate.limiter is not None
    with pytest.raises(RuntimeError):
        async with gate.slot():
            raise RuntimeError("no sample")
    for _ in range(3):
        async with gate.slot():
            pass
    assert not gate.limiter.probing
    assert gate.limiter.min_rtt is not None
    assert gate.limit == 64  # measured: back to the cap until latency says otherwise


async def test_routes_hold_their_admission_and_pass_through_routes_their_own() -> None:
    table = RouteTable({"small": RouteSettings(endpoint="e", max_concurrency=1)}, passthrough=True)
    route = table.resolve("small")
    async with route.slot():
        assert route.in_flight == 1
        other = table.resolve("endpoint/e")
        async with other.slot():
            assert other.in_flight == 1
    assert route.in_flight == other.in_flight == 0


async def test_calls_that_waited_out_a_cold_start_are_not_latency_samples() -> None:
    gate = admission(max_concurrency=64, adaptive=True, min_limit=2, probe_samples=1)
    assert gate.limiter is not None
    async with gate.slot():
        not_a_latency_sample()  # what the cold-start wait and a fallback answer call
    assert gate.limiter.probing
    async with gate.slot():
        pass
    assert not gate.limiter.probing


async def test_a_stream_admitted_before_the_limit_fell_is_not_sampled_after_it() -> None:
    # A stream's latency runs to its first part (Admitted.answered) but it holds its slot, and
    # is sampled, when it ends: the limiter must judge "admitted before the cut" by its
    # admission, not by now - latency (which, seconds into a stream, is after the cut).
    gate = admission(max_concurrency=64, adaptive=True, min_limit=2, probe_samples=1)
    limiter = gate.limiter
    assert limiter is not None
    async with gate.slot():
        pass  # the first probe: minRTT measured
    assert limiter.min_rtt is not None
    limiter.min_rtt = 0.1
    limit = gate.limit
    cut_at = time.monotonic() - 2.0  # the limit fell 2 s ago
    limiter._changed_at = cut_at
    limiter._window_ends = 0.0  # any window with enough samples closes now
    for _ in range(12):  # streams admitted 1 s before the cut, first part 0.4 s later, ending now
        async with gate.slot() as admitted:
            admitted.admitted_at = cut_at - 1.0
            admitted._answered = cut_at - 0.6
    assert gate.limit == limit
