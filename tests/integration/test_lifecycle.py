"""Deadlines, cancellation, concurrency bounds and graceful shutdown."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2

from sagewire.emulator.server import RunningEmulator
from sagewire.v1 import invoke_pb2
from support import Sagewire, failure, start_sagewire


async def test_caller_deadline_bounds_the_call(sagewire: Sagewire) -> None:
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sagewire.inference.Invoke(
            invoke_pb2.InvokeRequest(model="slow-echo", body=b"{}"), timeout=0.2
        )
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 0.9  # well before the model's 1 s answer


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
    call = sagewire.inference.Invoke(invoke_pb2.InvokeRequest(model="single-file", body=b"{}"))
    await asyncio.sleep(0.2)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    # The upstream HTTP request is dropped: the emulator sees its handler cancelled.
    stats = emulator.stats("slow-echo")
    for _ in range(100):
        if stats.invocations_cancelled:
            break
        await asyncio.sleep(0.01)
    assert stats.invocations_cancelled == 1
    # The slot is free again at once: the next call is accepted (and runs to completion).
    response = await sagewire.inference.Invoke(
        invoke_pb2.InvokeRequest(model="single-file", body=b"{}"), timeout=5
    )
    assert response.body == b"{}"


async def test_route_concurrency_limit_sheds_with_unavailable(sagewire: Sagewire) -> None:
    # UNAVAILABLE with RetryInfo, the code gRPC retry policies retry (docs/resilience.md).
    first = sagewire.inference.Invoke(invoke_pb2.InvokeRequest(model="single-file", body=b"{}"))
    await asyncio.sleep(0.2)
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
        await asyncio.sleep(0.2)
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
    async with start_sagewire(emulator.url) as sw:
        in_flight = asyncio.ensure_future(
            sw.inference.Invoke(invoke_pb2.InvokeRequest(model="slow-echo", body=b"x"))
        )
        await asyncio.sleep(0.2)
        started = time.monotonic()
        await sw.server.stop(grace_s=0.1)
        assert time.monotonic() - started < 0.8
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await in_flight
        assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
