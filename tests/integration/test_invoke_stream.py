"""InvokeStream end to end: event-stream parts from the emulator relayed as gRPC messages."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from sagewire.emulator.faults import Fault
from sagewire.emulator.server import RunningEmulator
from sagewire.v1 import common_pb2, invoke_pb2
from support import BOTH_AWS_CLIENTS, EOF, Sagewire, failure, start_sagewire

pytestmark = BOTH_AWS_CLIENTS


def _request(model: str, text: str, **extra: Any) -> invoke_pb2.InvokeStreamRequest:
    framing = extra.pop("framing", common_pb2.FRAMING_UNSPECIFIED)
    return invoke_pb2.InvokeStreamRequest(
        model=model,
        body=json.dumps({"text": text, **extra}).encode(),
        content_type="application/json",
        framing=framing,
    )


async def _collect(call: Any, into: list[bytes]) -> None:
    async for message in call:
        into.append(message.body)


def _value(doc: dict[str, Any]) -> struct_pb2.Value:
    value = struct_pb2.Value()
    value.struct_value.update(doc)
    return value


def _expected_lines(words: list[str]) -> list[bytes]:
    lines = [json.dumps({"token": w, "index": i}).encode() + b"\n" for i, w in enumerate(words)]
    return [*lines, json.dumps({"done": True, "count": len(words)}).encode() + b"\n"]


async def test_lines_framing_yields_whole_json_records_in_order(sagewire: Sagewire) -> None:
    words = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "the",
        "lazy",
        "dog",
        "again",
        "and",
        "again",
    ]
    call = sagewire.inference.InvokeStream(_request("tokens", " ".join(words)))
    messages = [m async for m in call]
    assert [m.body for m in messages] == _expected_lines(words)
    assert [m.index for m in messages] == list(range(len(words) + 1))
    assert messages[0].json.struct_value["token"] == "the"
    assert messages[-1].json.struct_value["done"] is True
    metadata = dict(await call.initial_metadata())
    assert metadata["sagewire-content-type"] == "application/jsonlines"
    assert metadata["sagewire-invoked-production-variant"] == "AllTraffic"
    assert await call.code() is grpc.StatusCode.OK


async def test_raw_framing_relays_parts_exactly(emulator: RunningEmulator) -> None:
    words = ["alpha", "beta", "gamma", "delta", "epsilon"]
    # Coalescing off: one message per PayloadPart (test_stream_coalescing covers it on).
    async with start_sagewire(emulator, server={"stream_coalesce_bytes": 0}) as sagewire:
        messages = [
            m
            async for m in sagewire.inference.InvokeStream(_request("tokens-raw", " ".join(words)))
        ]
    assert b"".join(m.body for m in messages) == b"".join(_expected_lines(words))
    # The emulator cuts parts mid-line on purpose: raw framing must not repair that.
    assert any(not m.body.endswith(b"\n") for m in messages)
    assert all(not m.HasField("json") for m in messages)


async def test_caller_may_switch_framing_where_the_route_allows(sagewire: Sagewire) -> None:
    words = ["one", "two", "three"]
    messages = [
        m
        async for m in sagewire.inference.InvokeStream(
            _request("tokens", " ".join(words), framing=common_pb2.FRAMING_RAW)
        )
    ]
    assert b"".join(m.body for m in messages) == b"".join(_expected_lines(words))
    assert len(messages) != len(words) + 1
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in sagewire.inference.InvokeStream(
            _request("tokens-raw", "x", framing=common_pb2.FRAMING_LINES)
        ):
            pass
    f = failure(caught.value)
    assert (f.code, f.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "OPTION_NOT_ALLOWED")
    assert f.message.startswith("framing")


async def test_first_record_arrives_before_the_model_finishes(sagewire: Sagewire) -> None:
    started = time.monotonic()
    call = sagewire.inference.InvokeStream(_request("tokens", "a b", delay_ms=1500))
    first = await call.read()
    first_after = time.monotonic() - started
    assert isinstance(first, invoke_pb2.InvokeStreamResponse)
    assert first.json.struct_value["token"] == "a"
    # The model waits 1.5 s before the second word; the first must not wait for it. The
    # bound includes the call's setup.
    assert first_after < 1.5
    rest = []
    while (message := await call.read()) is not EOF:
        rest.append(message)
    assert len(rest) == 2  # "b" and the closing record


async def test_stream_on_realtime_route_is_failed_precondition(sagewire: Sagewire) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in sagewire.inference.InvokeStream(_request("echo", "x")):
            pass
    assert failure(caught.value).reason == "WRONG_MODE"


async def test_error_before_first_part_maps_like_invoke(
    sagewire: Sagewire, emulator: RunningEmulator
) -> None:
    emulator.set_fault("faulty-stream", Fault(error="throttling"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in sagewire.inference.InvokeStream(_request("faulty-stream", "x y")):
            pass
    f = failure(caught.value)
    assert (f.code, f.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "THROTTLED")


async def test_headers_arrive_before_any_part(
    sagewire: Sagewire, emulator: RunningEmulator
) -> None:
    # The stream opens upstream, then the model sends nothing: the initial metadata must not
    # wait for the first part (sagewire sends it while reading that part).
    emulator.set_fault("faulty-stream", Fault(stall_after_parts=0))
    call = sagewire.inference.InvokeStream(_request("faulty-stream", "x y"))
    try:
        metadata = dict(await asyncio.wait_for(call.initial_metadata(), 30))
        assert metadata["sagewire-endpoint-name"] == "faulty-stream"
        assert metadata["sagewire-content-type"]
    finally:
        call.cancel()


async def test_failure_before_the_first_part_follows_the_headers(
    sagewire: Sagewire, emulator: RunningEmulator
) -> None:
    # The stream opened (headers sent), then failed before any part: the status is the
    # mapped one, not gRPC's complaint about a second initial-metadata operation.
    emulator.set_fault(
        "faulty-stream",
        Fault(stream_error_after_parts=0, stream_error_code="ModelInvocationTimeExceeded"),
    )
    call = sagewire.inference.InvokeStream(_request("faulty-stream", "x y"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call:
            pass
    assert dict(await call.initial_metadata())["sagewire-endpoint-name"] == "faulty-stream"
    f = failure(caught.value)
    assert (f.code, f.reason) == (grpc.StatusCode.DEADLINE_EXCEEDED, "MODEL_STREAM_TIMEOUT")


@pytest.mark.parametrize(
    ("fault", "code", "reason"),
    [
        (
            {
                "stream_error": "model_stream_error",
                "stream_error_code": "ModelInvocationTimeExceeded",
            },
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "MODEL_STREAM_TIMEOUT",
        ),
        (
            {"stream_error": "model_stream_error", "stream_error_code": "StreamBroken"},
            grpc.StatusCode.UNAVAILABLE,
            "MODEL_STREAM_BROKEN",
        ),
        (
            {"stream_error": "internal_stream_failure"},
            grpc.StatusCode.UNAVAILABLE,
            "SAGEMAKER_STREAM_FAILURE",
        ),
    ],
    ids=["model-timeout", "stream-broken", "internal-failure"],
)
async def test_mid_stream_failure_ends_after_the_data_already_sent(
    sagewire: Sagewire,
    emulator: RunningEmulator,
    fault: dict[str, Any],
    code: grpc.StatusCode,
    reason: str,
) -> None:
    # Parts of 7, 40, 3, 64 bytes: after 6 parts (161 bytes) four whole records were sent.
    emulator.set_fault("faulty-stream", Fault(stream_error_after_parts=6, **fault))
    words = [f"w{i}" for i in range(40)]
    received: list[bytes] = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _collect(
            sagewire.inference.InvokeStream(_request("faulty-stream", " ".join(words))), received
        )
    f = failure(caught.value)
    assert (f.code, f.reason) == (code, reason)
    assert received
    # Whole records, then the bytes of the record the failure cut (relayed, without newline).
    expected = _expected_lines(words)
    *whole, last = received
    assert whole == expected[: len(whole)]
    assert expected[len(whole)].startswith(last)


async def test_dropped_connection_mid_stream_is_unavailable(
    sagewire: Sagewire, emulator: RunningEmulator
) -> None:
    emulator.set_fault("faulty-stream", Fault(drop_after_parts=5))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in sagewire.inference.InvokeStream(_request("faulty-stream", "a " * 50)):
            pass
    f = failure(caught.value)
    assert f.code is grpc.StatusCode.UNAVAILABLE
    assert f.reason == "UPSTREAM_CONNECTION_LOST"  # connected, then lost: the model ran


async def _wait_until(predicate: Any, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def test_caller_cancel_stops_the_model(sagewire: Sagewire, emulator: RunningEmulator) -> None:
    words = " ".join(f"w{i}" for i in range(200))
    call = sagewire.inference.InvokeStream(_request("tokens", words, delay_ms=100))  # 20 s
    for _ in range(3):
        await call.read()
    call.cancel()
    stats = emulator.stats("tokens")
    await _wait_until(lambda: stats.streams_aborted == 1)
    sent = stats.stream_parts_sent
    await asyncio.sleep(0.3)
    assert stats.stream_parts_sent == sent  # the model stopped producing
    assert stats.active_streams == 0
    assert stats.streams_completed == 0


async def test_deadline_closes_the_upstream_stream(
    sagewire: Sagewire, emulator: RunningEmulator
) -> None:
    # The deadline also covers the call's setup and the upstream stream's start (over 0.5 s on
    # a loaded machine): 3 s, against a stream of 200 x 50 ms.
    words = " ".join(f"w{i}" for i in range(200))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in sagewire.inference.InvokeStream(
            _request("tokens", words, delay_ms=50), timeout=3
        ):
            pass
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    stats = emulator.stats("tokens")
    await _wait_until(lambda: stats.streams_aborted == 1)
    assert stats.active_streams == 0


async def test_slow_reader_pushes_back_to_the_model(
    sagewire: Sagewire, emulator: RunningEmulator
) -> None:
    """With the caller not reading, sagewire must not drain the model into memory: flow
    control stops the model long before the whole answer is produced, then it resumes."""
    total, part = 256 * 1024 * 1024, 64 * 1024
    call = sagewire.inference.InvokeStream(
        invoke_pb2.InvokeStreamRequest(
            model="firehose", json=_value({"bytes": total, "part_size": part})
        ),
        timeout=60,
    )
    await call.read()
    stats = emulator.stats("firehose")
    await asyncio.sleep(1.0)
    paused_parts = stats.stream_parts_sent
    await asyncio.sleep(0.5)
    assert stats.stream_parts_sent == paused_parts  # stalled, not trickling into a buffer
    produced = paused_parts * part
    # Everything in flight (TCP buffers, HTTP/2 windows, one part in sagewire) is a few MB.
    assert produced < 32 * 1024 * 1024, f"{produced} bytes produced while the reader paused"
    received = part
    while (message := await call.read()) is not EOF:
        assert isinstance(message, invoke_pb2.InvokeStreamResponse)
        received += len(message.body)
    assert received == total
    assert stats.streams_completed == 1
