"""sagewire.client end to end: AsyncClient / Client → sagewire → aioboto3 → the emulator.

Every method and error kind over real sockets, and gRPC's retry policy against the emulator's
faults: what is retried (UNAVAILABLE before any answer) and what is not (a stream that already
delivered parts, errors a retry cannot fix).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio

from sagewire.client import (
    AsyncClient,
    Cancelled,
    Client,
    DeadlineExceeded,
    InvalidArgument,
    ModelError,
    NotFound,
    QuotaExceeded,
    SagewireError,
    Unavailable,
)
from sagewire.emulator.faults import Fault
from sagewire.emulator.server import RunningEmulator
from support import BOTH_AWS_CLIENTS, Sagewire

pytestmark = BOTH_AWS_CLIENTS


@pytest_asyncio.fixture
async def client(sagewire: Sagewire) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(sagewire.target, timeout=20) as c:
        yield c


async def test_invoke_json_is_exact_both_ways(client: AsyncClient) -> None:
    # 64-bit and past-2^53 integers survive: the client sends and parses the exact JSON text.
    document = {"id": 9223372036854775807, "near53": 9007199254740993, "x": [1.5, "é"]}
    result = await client.invoke("echo", json=document)
    assert result.json() == document
    assert result.content_type == "application/json"
    assert result.variant == "AllTraffic"


async def test_invoke_bytes_options_and_content_type(client: AsyncClient) -> None:
    result = await client.invoke(
        "echo",
        body=b"\x00\x01raw",
        content_type="application/x-blob",
        options={"target_variant": "B", "custom_attributes": "trace=1"},
    )
    assert (result.body, result.content_type, result.variant) == (
        b"\x00\x01raw",
        "application/x-blob",
        "B",
    )


async def test_payload_arguments_are_checked_before_any_call(client: AsyncClient) -> None:
    with pytest.raises(TypeError, match="exactly one"):
        await client.invoke("echo")
    with pytest.raises(ValueError, match="Out of range float values"):
        await client.invoke("echo", json={"x": float("nan")})


async def test_errors_are_typed_with_reason_and_details(
    client: AsyncClient, emulator: RunningEmulator
) -> None:
    with pytest.raises(NotFound) as unknown:
        await client.invoke("no-such-model", json={})
    assert unknown.value.reason == "UNKNOWN_MODEL"
    assert unknown.value.code is grpc.StatusCode.NOT_FOUND

    with pytest.raises(InvalidArgument) as not_allowed:
        await client.invoke("echo-strict", json={}, options={"custom_attributes": "a"})
    assert not_allowed.value.reason == "OPTION_NOT_ALLOWED"
    assert not_allowed.value.field == "options.custom_attributes"

    emulator.set_fault("faulty", Fault(error="model_error", original_status=400,
                                       original_message="bad input: field x"))  # fmt: skip
    with pytest.raises(ModelError) as model:
        await client.invoke("faulty", json={})
    assert (model.value.model_status, model.value.model_message) == (400, "bad input: field x")
    assert model.value.code is grpc.StatusCode.INVALID_ARGUMENT

    emulator.set_fault("faulty", Fault(error="throttling"))
    with pytest.raises(QuotaExceeded) as throttled:
        await client.invoke("faulty", json={})
    assert throttled.value.reason == "THROTTLED"
    assert throttled.value.retry_after == 1.0

    with pytest.raises(DeadlineExceeded):
        await client.invoke("slow-echo", json={}, timeout=0.2)


async def test_stream_parts_arrive_in_order(client: AsyncClient) -> None:
    parts = [p async for p in client.stream("tokens", json={"text": "a b c"})]
    assert [p.index for p in parts] == list(range(len(parts)))
    words = [p.json()["token"] for p in parts if "token" in p.json()]
    assert words == ["a", "b", "c"]
    assert parts[-1].json()["done"] is True


async def test_stream_failure_after_parts_is_not_retried(
    client: AsyncClient, emulator: RunningEmulator
) -> None:
    # The stream committed the call (headers and parts reached us): gRPC must not retry it,
    # even though UNAVAILABLE is a retryable code.
    emulator.set_fault(
        "faulty-stream", Fault(stream_error_after_parts=2, stream_error_code="StreamBroken")
    )
    received = []

    async def read_all() -> None:
        async for part in client.stream("faulty-stream", json={"text": "a b c d e f"}):
            received.append(part)

    with pytest.raises(Unavailable) as broken:
        await read_all()
    assert broken.value.reason == "MODEL_STREAM_BROKEN"
    assert received  # parts before the failure were delivered
    assert emulator.stats("faulty-stream").invocations == 1


async def test_unavailable_is_retried_until_it_succeeds(
    sagewire: Sagewire, emulator: RunningEmulator
) -> None:
    # The first two upstream calls fail with 503 (sagewire's AWS client makes one attempt in
    # tests), so the caller sees UNAVAILABLE twice; gRPC's policy retries and the third works.
    # sagewire asks for 1 s (RetryInfo, and grpc-retry-pushback-ms for gRPC's policy): each
    # retry waits that long instead of the policy's own 0-0.2 s randomised backoff.
    emulator.set_fault("faulty", Fault(error="service_unavailable", error_first_calls=2))
    async with AsyncClient(sagewire.target, timeout=20) as c:
        started = time.monotonic()
        result = await c.invoke("faulty", json={"n": 1})
        elapsed = time.monotonic() - started
    assert result.json() == {"n": 1}
    assert emulator.stats("faulty").invocations == 3
    assert elapsed >= 2.0


async def test_retries_stop_at_max_attempts_and_can_be_turned_off(
    sagewire: Sagewire, emulator: RunningEmulator
) -> None:
    emulator.set_fault("faulty", Fault(error="service_unavailable"))
    async with AsyncClient(sagewire.target, timeout=20) as c:
        with pytest.raises(Unavailable) as exhausted:
            await c.invoke("faulty", json={})
    assert exhausted.value.reason == "SAGEMAKER_UNAVAILABLE"
    assert exhausted.value.retry_after == 1.0
    assert emulator.stats("faulty").invocations == 4  # maxAttempts of RETRY_SERVICE_CONFIG

    emulator.reset()
    emulator.set_fault("faulty", Fault(error="service_unavailable"))
    async with AsyncClient(sagewire.target, timeout=20, retries=False) as c:
        with pytest.raises(Unavailable):
            await c.invoke("faulty", json={})
    assert emulator.stats("faulty").invocations == 1


async def test_errors_a_retry_cannot_fix_are_sent_once(
    client: AsyncClient, emulator: RunningEmulator
) -> None:
    faults = [
        Fault(error="validation", message="bad option"),  # INVALID_ARGUMENT
        Fault(error="model_error", original_status=500),  # INTERNAL: the model ran
        Fault(error="throttling"),  # RESOURCE_EXHAUSTED: back off, do not hammer
    ]
    for fault in faults:
        emulator.reset()
        emulator.set_fault("faulty", fault)
        with pytest.raises(SagewireError) as failed:
            await client.invoke("faulty", json={})
        assert failed.value.code is not grpc.StatusCode.UNAVAILABLE
        assert emulator.stats("faulty").invocations == 1, fault


async def test_models_and_model(client: AsyncClient) -> None:
    names = [m.name for m in await client.models()]
    assert names == sorted(names)
    assert "echo" in names
    echo = await client.model("tokens")
    assert (echo.mode, echo.endpoint_name) == ("stream", "tokens")
    assert "framing" in echo.allowed_options
    with pytest.raises(NotFound):
        await client.model("nope")


async def test_converse_turns_stream_and_cancel(client: AsyncClient) -> None:
    async with client.converse("tokens") as session:
        turn = await session.send({"text": "one two"})
        chunks = [c async for c in turn]
        assert turn.end is not None
        assert turn.end.chunk_count == len(chunks)
        assert chunks[-1].json()["done"] is True

        slow = await session.send({"text": "w " * 50, "delay_ms": 200})
        await slow.cancel()
        with pytest.raises(Cancelled):
            await slow.text()

        again = await session.send({"text": "still open"})
        assert "still" in await again.text()


async def test_converse_open_errors_raise(client: AsyncClient) -> None:
    with pytest.raises(NotFound):
        async with client.converse("no-such-model"):
            pass


async def test_blocking_client_has_the_same_calls(sagewire: Sagewire) -> None:
    # In a thread: the server under test runs on this test's event loop.
    def calls() -> None:
        with Client(sagewire.target, timeout=20) as c:
            assert c.invoke("echo", json={"a": 1}).json() == {"a": 1}
            parts = list(c.stream("tokens", json={"text": "x y"}))
            assert parts[-1].json()["done"] is True
            with pytest.raises(NotFound):
                c.invoke("nope", json={})
            assert any(m.name == "echo" for m in c.models())

    await asyncio.to_thread(calls)


async def test_blocking_stream_stops_upstream_when_abandoned(
    sagewire: Sagewire, emulator: RunningEmulator
) -> None:
    def first_part() -> bytes:
        with Client(sagewire.target, timeout=20) as c:
            # 20 s: the model is still streaming when the abandoned call ends, however slowly.
            for part in c.stream("tokens", json={"text": "w " * 100, "delay_ms": 200}):
                return part.body
        return b""

    assert json.loads(await asyncio.to_thread(first_part))
    for _ in range(300):
        if emulator.stats("tokens").streams_aborted:
            break
        await asyncio.sleep(0.05)
    assert emulator.stats("tokens").streams_aborted == 1


async def test_bearer_token_from_a_string_or_an_async_source() -> None:
    # A bare gRPC server that only records what ListModels received (sagewire's own checks of
    # the token belong to the security layer's tests).
    seen: list[str] = []

    async def list_models(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        seen.append(dict(context.invocation_metadata() or ()).get("authorization", ""))
        return b""

    handler = grpc.method_handlers_generic_handler(
        "sagewire.v1.ModelService",
        {"ListModels": grpc.unary_unary_rpc_method_handler(list_models)},
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    calls = 0

    async def rotating() -> str:
        nonlocal calls
        calls += 1
        return f"token-{calls}"

    try:
        async with AsyncClient(f"127.0.0.1:{port}", token="static") as c:
            assert await c.models() == []
        async with AsyncClient(f"127.0.0.1:{port}", token=rotating) as c:
            await c.models()
            await c.models()
    finally:
        await server.stop(None)
    assert seen == ["Bearer static", "Bearer token-1", "Bearer token-2"]
