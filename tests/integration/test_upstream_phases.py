"""Connection failures are judged by how far the call got, data received before one is relayed,
and only calls that prove the model did not run are sent again (issue 10, classes 3, 4, 9).

A sagewire of its own: a short aws.read_timeout_s and botocore's default of three attempts.
The emulator really stalls, drops the connection, or answers late.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.rpc import error_details_pb2

from sagewire.emulator.faults import Fault
from sagewire.emulator.server import RunningEmulator
from sagewire.v1 import converse_pb2, invoke_pb2
from support import AS_SENT, BOTH_AWS_CLIENTS, Sagewire, failure, start_sagewire

pytestmark = BOTH_AWS_CLIENTS

READ_TIMEOUT_S = 1.0
# Breaker and cold-start waits off (AS_SENT): every test sees each failure as the emulator sent it.
ROUTES: dict[str, dict[str, Any]] = {
    "faulty": {"endpoint": "faulty", "timeout_s": 60, **AS_SENT},
    "lines": {
        "endpoint": "faulty-stream",
        "mode": "stream",
        "framing": "lines",
        "timeout_s": 60,
        **AS_SENT,
    },
    "raw": {
        "endpoint": "faulty-stream",
        "mode": "stream",
        "framing": "raw",
        "timeout_s": 60,
        **AS_SENT,
    },
}
# The tokens model's first PayloadPart: 7 bytes of its first JSON line (no newline yet).
FIRST_PART = b'{"token'


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gateway(emulator: RunningEmulator, aws_client: str) -> AsyncIterator[Sagewire]:
    async with start_sagewire(
        emulator.url,
        routes=ROUTES,
        aws={"read_timeout_s": READ_TIMEOUT_S, "max_attempts": 3, "client": aws_client},
    ) as server:
        yield server


def _stream_request(model: str) -> invoke_pb2.InvokeStreamRequest:
    text = " ".join(f"w{i}" for i in range(20))
    return invoke_pb2.InvokeStreamRequest(
        model=model, body=json.dumps({"text": text}).encode(), content_type="application/json"
    )


async def _relay(gateway: Sagewire, model: str) -> tuple[list[bytes], grpc.aio.AioRpcError]:
    received: list[bytes] = []
    call = gateway.inference.InvokeStream(_stream_request(model), timeout=30)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _collect(call, received)
    return received, caught.value


async def _collect(call: Any, into: list[bytes]) -> None:
    async for message in call:
        into.append(message.body)


@pytest.mark.parametrize("model", ["raw", "lines"])
async def test_a_stream_silent_after_a_part_is_a_read_timeout_after_that_part(
    gateway: Sagewire, emulator: RunningEmulator, model: str
) -> None:
    emulator.set_fault("faulty-stream", Fault(stall_after_parts=1))
    received, error = await _relay(gateway, model)
    f = failure(error)
    assert (f.code, f.reason) == (grpc.StatusCode.DEADLINE_EXCEEDED, "UPSTREAM_READ_TIMEOUT")
    assert f.detail(error_details_pb2.RetryInfo) is None  # a stuck model: no retry invited
    assert b"".join(received) == FIRST_PART


async def test_a_stream_whose_parts_keep_coming_outlives_the_read_timeout(
    gateway: Sagewire,
) -> None:
    """The read timeout bounds the silence between parts, not the stream: 10 words 0.25 s apart
    take 2.25 s, past the 1 s read timeout, and all arrive (each part moves the deadline)."""
    words = [f"w{i}" for i in range(10)]
    body = json.dumps({"text": " ".join(words), "delay_ms": 250}).encode()
    request = invoke_pb2.InvokeStreamRequest(
        model="lines", body=body, content_type="application/json"
    )
    lines = [json.loads(m.body) async for m in gateway.inference.InvokeStream(request, timeout=30)]
    assert [line["token"] for line in lines[:-1]] == words
    assert lines[-1] == {"done": True, "count": len(words)}


@pytest.mark.parametrize("model", ["raw", "lines"])
async def test_the_part_received_before_a_drop_is_relayed_before_the_failure(
    gateway: Sagewire, emulator: RunningEmulator, model: str
) -> None:
    emulator.set_fault("faulty-stream", Fault(drop_after_parts=1))
    received, error = await _relay(gateway, model)
    f = failure(error)
    assert (f.code, f.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_CONNECTION_LOST")
    assert b"".join(received) == FIRST_PART
    assert emulator.stats("faulty-stream").invocations == 1  # a broken stream is not resent


async def test_a_converse_turn_silent_after_a_part_ends_as_a_read_timeout(
    gateway: Sagewire, emulator: RunningEmulator
) -> None:
    emulator.set_fault("faulty-stream", Fault(stall_after_parts=1))
    call = gateway.inference.Converse(timeout=30)  # type: ignore[call-arg]
    await call.write(converse_pb2.ConverseRequest(open=converse_pb2.ConverseOpen(model="lines")))
    body = json.dumps({"text": "a b c d e f"}).encode()
    await call.write(
        converse_pb2.ConverseRequest(turn=converse_pb2.ConverseTurn(turn_id="t1", body=body))
    )
    chunks: list[bytes] = []
    async for message in call:
        if message.HasField("chunk"):
            chunks.append(message.chunk.body)
        if message.HasField("turn_error"):
            status = message.turn_error.status
            break
    else:
        raise AssertionError("the turn did not end with an error")
    call.cancel()
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert (status.code, info.reason) == (
        grpc.StatusCode.DEADLINE_EXCEEDED.value[0],
        "UPSTREAM_READ_TIMEOUT",
    )
    assert b"".join(chunks) == FIRST_PART


async def test_a_read_timeout_before_the_answer_runs_the_model_once(
    gateway: Sagewire, emulator: RunningEmulator
) -> None:
    # The model answers after 3 s, past the 1 s read timeout: it ran, so it is not resent.
    emulator.set_fault("faulty", Fault(latency_ms=3000))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.inference.Invoke(
            invoke_pb2.InvokeRequest(model="faulty", body=b"{}"), timeout=30
        )
    f = failure(caught.value)
    assert (f.code, f.reason) == (grpc.StatusCode.DEADLINE_EXCEEDED, "UPSTREAM_READ_TIMEOUT")
    assert emulator.stats("faulty").invocations == 1


async def test_throttling_is_still_resent_within_max_attempts(
    gateway: Sagewire, emulator: RunningEmulator
) -> None:
    emulator.set_fault("faulty", Fault(error="throttling"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.inference.Invoke(
            invoke_pb2.InvokeRequest(model="faulty", body=b"{}"), timeout=30
        )
    assert failure(caught.value).reason == "THROTTLED"
    assert emulator.stats("faulty").invocations == 3


async def test_an_internal_failure_is_not_resent(
    gateway: Sagewire, emulator: RunningEmulator
) -> None:
    # A 500 does not prove the model did not run (botocore resends it by default).
    emulator.set_fault("faulty", Fault(error="internal_failure"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.inference.Invoke(
            invoke_pb2.InvokeRequest(model="faulty", body=b"{}"), timeout=30
        )
    assert failure(caught.value).reason == "SAGEMAKER_INTERNAL_FAILURE"
    assert emulator.stats("faulty").invocations == 1
