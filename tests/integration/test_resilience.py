"""Circuit breakers, cold-start waits and fallback endpoints over the wire: grpc.aio and REST
clients → sagewire → aioboto3 → the emulator with injected faults (docs/resilience.md)."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import pytest
import pytest_asyncio
from google.rpc import error_details_pb2
from scrape import scrape, scrape_until

from sagewire.client import RETRY_SERVICE_CONFIG, AsyncClient
from sagewire.emulator.config import EmulatorConfig, EndpointConfig
from sagewire.emulator.faults import Fault
from sagewire.emulator.server import RunningEmulator, running_emulator
from sagewire.v1 import common_pb2, inference_service_pb2_grpc, invoke_pb2, model_service_pb2
from support import BOTH_AWS_CLIENTS, Sagewire, failure, start_sagewire

pytestmark = BOTH_AWS_CLIENTS

EMULATOR = EmulatorConfig(
    endpoints={
        "primary": EndpointConfig(model="echo"),
        "backup": EndpointConfig(model="echo", variants=["AllTraffic", "B"]),
        "cold": EndpointConfig(model="echo"),
        "stream-primary": EndpointConfig(model="tokens"),
        "stream-backup": EndpointConfig(model="tokens"),
    }
)
_NO_COLD_WAIT = {"cold_start": {"enabled": False}}
# Backoff short enough that several attempts fit a test's deadline.
_QUICK = {"initial_backoff_s": 0.05, "max_backoff_s": 0.2, "min_backoff_s": 0.01}
_FALLBACK_FAULTS = ["throttling", "service_unavailable", "model_not_ready"]
ROUTES: dict[str, dict[str, Any]] = {
    # open_s long: an open circuit stays open for the whole test, however loaded the machine.
    "brk": {
        "endpoint": "primary",
        "circuit_breaker": {"failure_threshold": 3, "open_s": 60},
        **_NO_COLD_WAIT,
    },
    "brk-fast": {
        "endpoint": "primary",
        "circuit_breaker": {"failure_threshold": 2, "open_s": 0.5},
        **_NO_COLD_WAIT,
    },
    "brk-model": {"endpoint": "primary", "circuit_breaker": {"failure_threshold": 2}},
    "cold": {"endpoint": "cold", "timeout_s": 30, "cold_start": _QUICK},
    "cold-capped": {"endpoint": "cold", "cold_start": {**_QUICK, "max_wait_s": 0.5}},
    "fb": {
        "endpoint": "primary",
        "fallbacks": [{"endpoint": "backup", "target_variant": "B"}],
        "circuit_breaker": {"failure_threshold": 2, "open_s": 60},
    },
    "fb-pinned": {"endpoint": "primary", "allow": ["session_id"], "fallbacks": ["backup"]},
    # One route per fault of the parametrized test: each starts with closed circuits.
    **{
        f"fb-{fault}": {
            "endpoint": "primary",
            "fallbacks": [{"endpoint": "backup", "target_variant": "B"}],
        }
        for fault in _FALLBACK_FAULTS
    },
    "fb-converse": {"endpoint": "primary", "fallbacks": ["backup"]},
    "fb-stream": {
        "endpoint": "stream-primary",
        "mode": "stream",
        "framing": "lines",
        "fallbacks": ["stream-backup"],
    },
}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def emu() -> AsyncIterator[RunningEmulator]:
    async with running_emulator(EMULATOR) as emulator:
        yield emulator


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sw(emu: RunningEmulator, aws_client: str) -> AsyncIterator[Sagewire]:
    telemetry = {"metrics_listen": "127.0.0.1:0"}
    aws = {"client": aws_client}
    async with start_sagewire(emu, routes=ROUTES, telemetry=telemetry, aws=aws) as server:
        yield server


@pytest.fixture(autouse=True)
def _healthy(emu: RunningEmulator) -> None:
    emu.reset()


async def _invoke(sw: Sagewire, model: str, deadline_s: float = 30, **fields: Any) -> Any:
    request = invoke_pb2.InvokeRequest(model=model, body=b'{"x": 1}', **fields)
    return await sw.inference.Invoke(request, timeout=deadline_s)


async def _fails(sw: Sagewire, model: str, deadline_s: float = 30, **fields: Any) -> Any:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _invoke(sw, model, deadline_s, **fields)
    return failure(caught.value)


async def _endpoints(sw: Sagewire, model: str) -> list[model_service_pb2.RouteEndpoint]:
    response = await sw.models.GetModel(model_service_pb2.GetModelRequest(name=model))
    return list(response.model.endpoints)


async def _until_state(sw: Sagewire, model: str, state: int) -> None:
    for _ in range(200):
        if (await _endpoints(sw, model))[0].circuit_state == state:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{model}: circuit never reached state {state}")


# -- circuit breaker ---------------------------------------------------------------------------


async def test_breaker_opens_after_upstream_failures_and_fails_fast(
    sw: Sagewire, emu: RunningEmulator
) -> None:
    emu.set_fault("primary", Fault(error="service_unavailable"))
    for _ in range(3):
        f = await _fails(sw, "brk")
        assert (f.code, f.reason) == (grpc.StatusCode.UNAVAILABLE, "SAGEMAKER_UNAVAILABLE")
    assert emu.stats("primary").invocations == 3
    [primary] = await _endpoints(sw, "brk")
    assert primary.circuit_state == model_service_pb2.CIRCUIT_STATE_OPEN
    assert primary.consecutive_failures == 3
    assert 50 < primary.half_open_in.ToTimedelta().total_seconds() <= 60

    f = await _fails(sw, "brk")
    assert (f.code, f.reason) == (grpc.StatusCode.UNAVAILABLE, "CIRCUIT_OPEN")
    retry = f.detail(error_details_pb2.RetryInfo).retry_delay.ToTimedelta().total_seconds()
    assert 50 < retry <= 60  # the time until the circuit half-opens
    assert "'primary'" in f.message
    assert "half-opens" in f.message
    assert emu.stats("primary").invocations == 3  # failed fast: SageMaker never saw it

    # The REST bridge: 503 with Retry-After, the same reason.
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{sw.rest_url}/v1/models/brk:invoke", json={"json": {}}) as response,
    ):
        body = await response.json()
        assert response.status == 503
        assert 50 < int(response.headers["Retry-After"]) <= 60
    assert body["details"][0]["reason"] == "CIRCUIT_OPEN"
    assert emu.stats("primary").invocations == 3

    metrics = await scrape(f"http://127.0.0.1:{sw.server.metrics_port}/metrics")
    assert metrics.value("sagewire_circuit_state", model="brk", endpoint="primary") == 2
    opened = {"model": "brk", "endpoint": "primary", "state": "open"}
    assert metrics.value("sagewire_circuit_transitions_total", **opened) == 1


async def test_breaker_half_opens_probes_and_closes(sw: Sagewire, emu: RunningEmulator) -> None:
    emu.set_fault("primary", Fault(error="throttling"))
    for _ in range(2):
        assert (await _fails(sw, "brk-fast")).reason == "THROTTLED"
    assert (await _endpoints(sw, "brk-fast"))[0].circuit_state == (
        model_service_pb2.CIRCUIT_STATE_OPEN
    )
    # Half-open, a failing probe opens it again at once.
    await _until_state(sw, "brk-fast", model_service_pb2.CIRCUIT_STATE_HALF_OPEN)
    assert (await _fails(sw, "brk-fast")).reason == "THROTTLED"
    assert emu.stats("primary").invocations == 3
    assert (await _endpoints(sw, "brk-fast"))[0].circuit_state == (
        model_service_pb2.CIRCUIT_STATE_OPEN
    )
    # Half-open again with the endpoint healthy: the probe succeeds and closes it.
    emu.set_fault("primary", None)
    await _until_state(sw, "brk-fast", model_service_pb2.CIRCUIT_STATE_HALF_OPEN)
    response = await _invoke(sw, "brk-fast")
    assert response.body == b'{"x": 1}'
    [primary] = await _endpoints(sw, "brk-fast")
    assert primary.circuit_state == model_service_pb2.CIRCUIT_STATE_CLOSED
    assert primary.consecutive_failures == 0


async def test_model_errors_do_not_open_the_circuit(sw: Sagewire, emu: RunningEmulator) -> None:
    for status in (500, 503, 400, 500, 500):
        emu.set_fault("primary", Fault(error="model_error", original_status=status))
        assert (await _fails(sw, "brk-model")).reason == "MODEL_ERROR"
    assert emu.stats("primary").invocations == 5  # every one reached the endpoint
    [primary] = await _endpoints(sw, "brk-model")
    assert primary.circuit_state == model_service_pb2.CIRCUIT_STATE_CLOSED
    assert primary.consecutive_failures == 0


# -- cold starts -------------------------------------------------------------------------------


async def test_a_cold_endpoint_answers_within_the_deadline(
    sw: Sagewire, emu: RunningEmulator
) -> None:
    emu.set_fault("cold", Fault(cold_for_calls=4))
    response = await _invoke(sw, "cold", 30)
    assert response.body == b'{"x": 1}'
    assert response.endpoint_name == "cold"
    assert emu.stats("cold").invocations == 5  # four ModelNotReady, then the answer
    metrics = await scrape(f"http://127.0.0.1:{sw.server.metrics_port}/metrics")
    waited = {"model": "cold", "outcome": "retried"}
    assert metrics.value("sagewire_cold_start_waits_total", **waited) == 4
    # The REST bridge waits the same way.
    emu.set_fault("cold", Fault(cold_for_calls=7))
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{sw.rest_url}/v1/models/cold:invoke", json={"json": {"y": 2}}) as answer,
    ):
        assert answer.status == 200
        assert (await answer.json())["endpointName"] == "cold"


@pytest.mark.parametrize(
    ("model", "deadline_s", "within_s", "why"),
    # UNAVAILABLE rather than DEADLINE_EXCEEDED already shows sagewire answered inside the
    # caller's deadline (the client's gRPC core enforces it); the wall-clock bound only checks
    # that the route's cap (0.5 s), not the 30 s deadline, ended the wait, with room for a
    # loaded machine's late event loop.
    [("cold", 1.5, 10, "deadline is"), ("cold-capped", 30, 10, "max_wait_s")],
    ids=["deadline", "route-cap"],
)
async def test_a_cold_start_longer_than_allowed_is_unavailable_with_retry_info(
    sw: Sagewire, emu: RunningEmulator, model: str, deadline_s: float, within_s: float, why: str
) -> None:
    emu.set_fault("cold", Fault(error="model_not_ready"))
    started = time.monotonic()
    f = await _fails(sw, model, deadline_s)
    assert time.monotonic() - started < within_s
    assert (f.code, f.reason) == (grpc.StatusCode.UNAVAILABLE, "MODEL_NOT_READY")
    assert f.detail(error_details_pb2.RetryInfo) is not None
    assert "sagewire waited" in f.message
    assert why in f.message
    assert emu.stats("cold").invocations > 1


async def test_botocore_does_not_resend_model_not_ready_under_the_wait(
    emu: RunningEmulator,
) -> None:
    # Three botocore attempts configured, cold-start waits off: one ModelNotReady, one send.
    routes = {"cold": {"endpoint": "cold", **_NO_COLD_WAIT}}
    emu.set_fault("cold", Fault(error="model_not_ready"))
    async with start_sagewire(emu, routes=routes, aws={"max_attempts": 3}) as server:
        assert (await _fails(server, "cold")).reason == "MODEL_NOT_READY"
    assert emu.stats("cold").invocations == 1


async def test_a_callers_own_retry_gets_one_attempt_not_another_wait(
    sw: Sagewire, emu: RunningEmulator
) -> None:
    # The policy's first attempt waits out what it can (cold_start.max_wait_s 0.5 s) and gets
    # MODEL_NOT_READY with pushback 5 s; its retry (grpc-previous-rpc-attempts 1) is sent once.
    emu.set_fault("cold", Fault(error="model_not_ready"))
    config = copy.deepcopy(RETRY_SERVICE_CONFIG)
    config["methodConfig"][0]["retryPolicy"]["maxAttempts"] = 2
    metrics_url = f"http://127.0.0.1:{sw.server.metrics_port}/metrics"
    gave_up = {"model": "cold-capped", "outcome": "gave_up"}
    before = (await scrape(metrics_url)).value("sagewire_cold_start_waits_total", **gave_up) or 0
    options = [("grpc.enable_retries", 1), ("grpc.service_config", json.dumps(config))]
    async with grpc.aio.insecure_channel(sw.target, options=options) as channel:
        stub = inference_service_pb2_grpc.InferenceServiceStub(channel)
        request = invoke_pb2.InvokeRequest(model="cold-capped", body=b"{}")
        call = asyncio.ensure_future(stub.Invoke(request, timeout=30))
        found = await scrape_until(
            metrics_url,
            lambda s: (s.value("sagewire_cold_start_waits_total", **gave_up) or 0) > before,
        )
        first_attempt = emu.stats("cold").invocations  # the 5 s pushback has not passed yet
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
    assert failure(caught.value).reason == "MODEL_NOT_READY"
    assert first_attempt > 1  # the first attempt waited and tried again
    assert emu.stats("cold").invocations == first_attempt + 1
    after = (await scrape(metrics_url)).value("sagewire_cold_start_waits_total", **gave_up)
    assert after == found.value("sagewire_cold_start_waits_total", **gave_up)  # no second wait


# -- fallbacks ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", _FALLBACK_FAULTS)
async def test_a_retryable_failure_falls_back_and_says_who_answered(
    sw: Sagewire, emu: RunningEmulator, fault: Any
) -> None:
    emu.set_fault("primary", Fault(error=fault))
    response = await _invoke(sw, f"fb-{fault}")
    assert response.body == b'{"x": 1}'
    assert response.endpoint_name == "backup"
    assert response.invoked_production_variant == "B"  # the fallback's own variant
    assert (emu.stats("primary").invocations, emu.stats("backup").invocations) == (1, 1)
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{sw.rest_url}/v1/models/fb-{fault}:invoke", json={"json": {}}) as answer,
    ):
        assert answer.status == 200
        assert (await answer.json())["endpointName"] == "backup"


async def test_an_open_circuit_goes_straight_to_the_fallback(
    sw: Sagewire, emu: RunningEmulator
) -> None:
    emu.set_fault("primary", Fault(error="throttling"))
    for _ in range(4):
        assert (await _invoke(sw, "fb")).endpoint_name == "backup"
    # Two throttled answers opened the primary's circuit; the next calls did not reach it.
    assert (emu.stats("primary").invocations, emu.stats("backup").invocations) == (2, 4)
    primary, backup = await _endpoints(sw, "fb")
    assert (primary.endpoint_name, primary.fallback) == ("primary", False)
    assert primary.circuit_state == model_service_pb2.CIRCUIT_STATE_OPEN
    assert (backup.endpoint_name, backup.target_variant, backup.fallback) == ("backup", "B", True)
    assert backup.circuit_state == model_service_pb2.CIRCUIT_STATE_CLOSED
    metrics = await scrape(f"http://127.0.0.1:{sw.server.metrics_port}/metrics")
    used = {"model": "fb", "endpoint": "backup/B"}
    assert metrics.value("sagewire_fallback_answers_total", **used) == 4


async def test_no_fallback_for_model_errors_or_pinned_sessions(
    sw: Sagewire, emu: RunningEmulator
) -> None:
    emu.set_fault("primary", Fault(error="model_error", original_status=503))
    f = await _fails(sw, "fb-pinned")
    assert (f.code, f.reason) == (grpc.StatusCode.UNAVAILABLE, "MODEL_ERROR")  # the model ran
    # A stateful session lives on one endpoint: a call opening one stays there.
    emu.set_fault("primary", Fault(error="service_unavailable"))
    options = common_pb2.InvocationOptions(session_id="NEW_SESSION")
    assert (await _fails(sw, "fb-pinned", options=options)).reason == "SAGEMAKER_UNAVAILABLE"
    assert emu.stats("backup").invocations == 0


async def test_a_stream_falls_back_before_its_first_byte(
    sw: Sagewire, emu: RunningEmulator
) -> None:
    emu.set_fault("stream-primary", Fault(error="service_unavailable"))
    call = sw.inference.InvokeStream(
        invoke_pb2.InvokeStreamRequest(model="fb-stream", body=b'{"text": "a b"}'), timeout=30
    )
    bodies = [message.body async for message in call]
    assert [json.loads(body)["token"] for body in bodies[:2]] == ["a", "b"]
    metadata = dict(await call.initial_metadata())
    assert metadata["sagewire-endpoint-name"] == "stream-backup"
    assert emu.stats("stream-backup").streams_completed == 1


async def test_no_fallback_once_stream_bytes_were_sent(sw: Sagewire, emu: RunningEmulator) -> None:
    emu.set_fault(
        "stream-primary",
        Fault(stream_error_after_parts=2, stream_error="internal_stream_failure"),
    )
    call = sw.inference.InvokeStream(
        invoke_pb2.InvokeStreamRequest(model="fb-stream", body=b'{"text": "a b c d"}'),
        timeout=30,
    )
    received: list[bytes] = []

    async def read() -> None:
        async for message in call:
            received.append(message.body)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await read()
    assert failure(caught.value).reason == "SAGEMAKER_STREAM_FAILURE"
    assert len(received) == 2
    assert dict(await call.initial_metadata())["sagewire-endpoint-name"] == "stream-primary"
    assert emu.stats("stream-backup").invocations == 0


async def test_the_client_and_converse_turns_say_which_endpoint_answered(
    sw: Sagewire, emu: RunningEmulator
) -> None:
    emu.set_fault("primary", Fault(error="throttling"))
    emu.set_fault("stream-primary", Fault(error="throttling"))
    async with AsyncClient(sw.target, timeout=30) as client:
        assert (await client.invoke("fb-converse", json={"a": 1})).endpoint == "backup"
        for model, endpoint in [("fb-converse", "backup"), ("fb-stream", "stream-backup")]:
            async with client.converse(model) as session:
                turn = await session.send({"text": "one two"})
                assert await turn.text()
                assert turn.end is not None
                assert turn.end.endpoint == endpoint
    assert emu.stats("backup").invocations == 2
    assert emu.stats("stream-backup").invocations == 1
