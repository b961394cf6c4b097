"""Deadlines, cancellation, concurrency bounds and graceful shutdown."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2

from sagewire.emulator import Fault
from sagewire.emulator.server import RunningEmulator
from sagewire.v1 import invoke_pb2
from support import Sagewire, failure, start_sagewire

# The model's answer in the tests below that cut a call short: far beyond every bound they
# check, so that a loaded machine's slowness never looks like the model answering.
SLOW = Fault(latency_ms=30_000)


async def _eventually(check: Callable[[], bool], within_s: float = 30) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"condition still false after {within_s} s")
        await asyncio.sleep(0.01)


async def _in_flight(emulator: RunningEmulator) -> None:
    """Wait until a call to slow-echo has reached the emulator (and not ended)."""
    await _eventually(lambda: emulator.stats("slow-echo").active_invocations >= 1)


async def test_caller_deadline_bounds_the_call(
    sagewire: Sagewire, emulator: RunningEmulator
) -> None:
    emulator.set_fault("slow-echo", SLOW)
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sagewire.inference.Invoke(
            invoke_pb2.InvokeRequest(model="slow-echo", body=b"{}"), timeout=0.2
        )
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 10  # far before the model's 30 s answer


async def test_route_timeout_bounds_the_call_when_caller_sets_none(sagewire: Sagewire) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sagewire.inference.Invoke(
            invoke_pb2.InvokeRequest(model="slow-echo-short", body=b"{}")
        )
    f = failure(caught.value)
    assert (f.code, f.reason) == (grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED")
    assert "slow-echo-short" in f.message
    assert "0.3s" in f.message


async def test_cancelled_call_cancels_upstream_and_frees_its_slot(
    sagewire: Sagewire, emulator: RunningEmulator
) -> None:
    emulator.set_fault("slow-echo", SLOW)
    call = sagewire.inference.Invoke(invoke_pb2.InvokeRequest(model="single-file", body=b"{}"))
    await _in_flight(emulator)  # the cancel must find the call upstream, not on its way
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    # The upstream HTTP request is dropped: the emulator sees its handler cancelled.
    stats = emulator.stats("slow-echo")
    await _eventually(lambda: stats.invocations_cancelled == 1)
    emulator.set_fault("slow-echo", None)
    # The slot is free again at once: the next call is accepted (and runs to completion).
    response = await sagewire.inference.Invoke(
        invoke_pb2.InvokeRequest(model="single-file", body=b"{}"), timeout=5
    )
    assert response.body == b"{}"


async def test_route_concurrency_limit_sheds_with_unavailable(
    sagewire: Sagewire, emulator: RunningEmulator
) -> None:
    # UNAVAILABLE with RetryInfo, the code gRPC retry policies retry (docs/resilience.md).
    # The first call holds the route's one slot for 5 s: long enough for the second to arrive
    # inside it on a loaded machine, once the first is known to be upstream.
    emulator.set_fault("slow-echo", Fault(latency_ms=5000))
    first = sagewire.inference.Invoke(invoke_pb2.InvokeRequest(model="single-file", body=b"{}"))
    await _in_flight(emulator)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sagewire.inference.Invoke(
            invoke_pb2.InvokeRequest(model="single-file", body=b"{}"), timeout=5
        )
    f = failure(caught.value)
    assert (f.code, f.reason) == (grpc.StatusCode.UNAVAILABLE, "ROUTE_CONCURRENCY_LIMIT")
    assert f.detail(error_details_pb2.RetryInfo) is not None
    assert (await first).body == b"{}"


async def test_graceful_shutdown_finishes_in_flight_calls(emulator: RunningEmulator) -> None:
    async with start_sagewire(emulator.url) as sw:
        in_flight = asyncio.ensure_future(
            sw.inference.Invoke(invoke_pb2.InvokeRequest(model="slow-echo", body=b"kept"))
        )
        watch = sw.health.Watch(health_pb2.HealthCheckRequest(service=""))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        await _in_flight(emulator)  # accepted before the stop begins (1 s left upstream)
        stopping = asyncio.ensure_future(sw.server.stop(grace_s=5))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        # New calls are refused while the in-flight one finishes.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await sw.inference.Invoke(invoke_pb2.InvokeRequest(model="echo", body=b"x"))
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        response = await in_flight
        assert response.body == b"kept"
        await stopping


async def test_shutdown_grace_cancels_calls_that_overrun(emulator: RunningEmulator) -> None:
    emulator.set_fault("slow-echo", SLOW)
    async with start_sagewire(emulator.url) as sw:
        in_flight = asyncio.ensure_future(
            sw.inference.Invoke(invoke_pb2.InvokeRequest(model="slow-echo", body=b"x"))
        )
        await _in_flight(emulator)
        started = time.monotonic()
        await sw.server.stop(grace_s=0.1)
        assert time.monotonic() - started < 10  # the grace, not the model's 30 s
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await in_flight
        assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
