"""Load shedding over the wire (docs/resilience.md): a call over a route's limit is shed with
UNAVAILABLE, RetryInfo and `grpc-retry-pushback-ms`; a real grpc.aio client using the documented
service config (sagewire.client.RETRY_SERVICE_CONFIG, unchanged) retries it after the pushback
and succeeds. REST callers get 503 and Retry-After."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import cast

import aiohttp
import grpc
import pytest
import pytest_asyncio
from google.rpc import error_details_pb2

from sagewire.client import RETRY_SERVICE_CONFIG
from sagewire.emulator.faults import Fault
from sagewire.emulator.server import RunningEmulator
from sagewire.observability import calls
from sagewire.v1 import inference_service_pb2_grpc, invoke_pb2, model_service_pb2
from support import Sagewire, failure, start_sagewire

# The emulator holds the first call of a test far longer than any test runs: the test ends it
# (cancels it) once the second call has been shed, so however slowly the second call arrives on
# a busy machine, the slot is still held (a 1 s hold was not always long enough).
HOLD = Fault(latency_ms=60_000)
ROUTES = {
    # One call at a time, shed at once, asked to come back after 1-3 s.
    "one-slot": {
        "endpoint": "faulty",
        "max_concurrency": 1,
        "admission": {"max_wait_ms": 0, "retry_after_ms": 2000},
    },
    # The adaptive limit while it measures the unloaded latency: min_limit (1) call at a time.
    "adaptive": {
        "endpoint": "faulty",
        "max_concurrency": 8,
        "admission": {"adaptive": True, "min_limit": 1, "probe_samples": 1000, "max_wait_ms": 0},
    },
}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def shedding(emulator: RunningEmulator) -> AsyncIterator[Sagewire]:
    async with start_sagewire(emulator, routes=ROUTES) as sw:
        yield sw


def _invoke(model: str) -> invoke_pb2.InvokeRequest:
    return invoke_pb2.InvokeRequest(model=model, body=b'{"n":1}')


async def _hold_the_slot(sw: Sagewire, emulator: RunningEmulator, model: str) -> asyncio.Task[None]:
    """A call that holds the route's one slot (until released); returns once the emulator has it."""

    async def call() -> None:
        await sw.inference.Invoke(_invoke(model), timeout=30)

    task = asyncio.create_task(call())
    for _ in range(3000):
        if emulator.stats("faulty").invocations >= 1:
            return task
        await asyncio.sleep(0.01)
    raise AssertionError("the first call never reached the emulator")


async def _release(first: asyncio.Task[None]) -> None:
    """End the call holding the slot (the caller cancels it; sagewire frees the slot)."""
    first.cancel()
    with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
        await first


def _pushback(error: grpc.aio.AioRpcError) -> str:
    trailers = cast("list[tuple[str, str | bytes]]", list(error.trailing_metadata() or ()))
    return next(str(value) for key, value in trailers if key == "grpc-retry-pushback-ms")


async def test_a_shed_call_is_unavailable_with_retry_info_and_pushback(
    shedding: Sagewire, emulator: RunningEmulator
) -> None:
    emulator.set_fault("faulty", HOLD)
    first = await _hold_the_slot(shedding, emulator, "one-slot")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await shedding.inference.Invoke(_invoke("one-slot"), timeout=30)
    await _release(first)
    f = failure(caught.value)
    assert (f.code, f.reason) == (grpc.StatusCode.UNAVAILABLE, "ROUTE_CONCURRENCY_LIMIT")
    delay_ms = f.detail(error_details_pb2.RetryInfo).retry_delay.ToMilliseconds()
    assert 1000 <= delay_ms <= 3000  # retry_after_ms 2000, jittered ±50 %
    assert int(_pushback(caught.value)) == delay_ms
    assert emulator.stats("faulty").invocations == 1  # the shed call never went upstream


async def test_the_documented_retry_policy_retries_a_shed_call_after_the_pushback(
    shedding: Sagewire, emulator: RunningEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sagewire.access")
    emulator.set_fault("faulty", HOLD)
    options = [("grpc.service_config", json.dumps(RETRY_SERVICE_CONFIG))]
    async with grpc.aio.insecure_channel(shedding.target, options=options) as channel:
        stub = inference_service_pb2_grpc.InferenceServiceStub(channel)
        first = await _hold_the_slot(shedding, emulator, "one-slot")
        emulator.set_fault("faulty", None)  # the retried call is answered at once
        calls.write_waiting()
        caplog.clear()
        started = time.monotonic()
        second = asyncio.ensure_future(stub.Invoke(_invoke("one-slot"), timeout=30))

        def shed() -> bool:
            calls.write_waiting()  # access records are logged in batches (observability.calls)
            return any(
                r.name == "sagewire.access" and "ROUTE_CONCURRENCY_LIMIT" in r.getMessage()
                for r in caplog.records
            )

        # The slot is freed once the second call has been shed, within the 1-3 s pushback (a
        # release that comes later only costs the policy one more attempt).
        for _ in range(3000):
            if shed() or second.done():
                break
            await asyncio.sleep(0.01)
        await _release(first)
        answer = await second
        waited = time.monotonic() - started
    assert json.loads(answer.body) == {"n": 1}
    # Shed first (the slot was held), then retried: gRPC's own backoff would be at most
    # initialBackoff (0.2 s); sagewire's pushback of at least 1 s is what it waited.
    assert waited >= 1.0
    assert emulator.stats("faulty").invocations == 2


async def test_the_adaptive_limit_sheds_as_route_overloaded(
    shedding: Sagewire, emulator: RunningEmulator
) -> None:
    emulator.set_fault("faulty", HOLD)
    first = await _hold_the_slot(shedding, emulator, "adaptive")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await shedding.inference.Invoke(_invoke("adaptive"), timeout=30)
    await _release(first)
    f = failure(caught.value)
    assert (f.code, f.reason) == (grpc.StatusCode.UNAVAILABLE, "ROUTE_OVERLOADED")
    info = f.detail(error_details_pb2.ErrorInfo)
    assert dict(info.metadata) == {"model": "adaptive", "limit": "1"}
    assert int(_pushback(caught.value)) > 0


async def test_rest_callers_get_503_and_retry_after(
    shedding: Sagewire, emulator: RunningEmulator
) -> None:
    emulator.set_fault("faulty", HOLD)
    first = await _hold_the_slot(shedding, emulator, "one-slot")
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{shedding.rest_url}/v1/models/one-slot:invoke", json={"json": {}}) as response,
    ):
        status = await response.json()
        assert response.status == 503
        assert response.headers["Retry-After"] in ("1", "2", "3")  # 1-3 s, rounded up
    await _release(first)
    assert status["code"] == grpc.StatusCode.UNAVAILABLE.value[0]
    assert status["details"][0]["reason"] == "ROUTE_CONCURRENCY_LIMIT"


async def test_model_service_shows_the_routes_admission(
    shedding: Sagewire, emulator: RunningEmulator
) -> None:
    emulator.set_fault("faulty", HOLD)
    first = await _hold_the_slot(shedding, emulator, "adaptive")
    answer = await shedding.models.GetModel(model_service_pb2.GetModelRequest(name="adaptive"))
    await _release(first)
    admission = answer.model.admission
    # Adaptive, still measuring the unloaded latency: its limit is min_limit (1).
    assert (admission.max_concurrency, admission.concurrency_limit) == (8, 1)
    assert admission.adaptive
    assert admission.in_flight == 1
    static = await shedding.models.GetModel(model_service_pb2.GetModelRequest(name="one-slot"))
    assert (static.model.admission.concurrency_limit, static.model.admission.adaptive) == (1, False)
    assert static.model.admission.in_flight == 0
