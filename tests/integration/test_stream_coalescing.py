"""Stream coalescing over real sockets: parts already waiting go out as one message (raw
framing), the first part of a slow stream goes out alone, and the bytes never change.

Every relay of InvokeStream's parts is covered: the gRPC servicer, the REST bridge's
transcoded InvokeStream (NDJSON), the raw passthrough `…/invocations-response-stream` and
Converse turns on a raw stream route. The reader pauses until the model has written many parts
(an event counted by the emulator, not a sleep), so parts are waiting when it reads again.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from google.protobuf import struct_pb2

from sagewire.core.coalesce import DEFAULT_COALESCE_BYTES
from sagewire.emulator.server import RunningEmulator
from sagewire.v1 import converse_pb2, invoke_pb2
from support import EOF, TEST_ROUTES, Sagewire, start_sagewire

PART = 1024
TOTAL = 1024 * 1024  # 1,024 parts of 1 KiB, each `x` * 1023 + newline
PARTS = TOTAL // PART
EXPECTED = (b"x" * (PART - 1) + b"\n") * PARTS
WAITING = 128  # parts the model has written while the reader pauses


def _firehose(total: int = TOTAL, delay_ms: int = 0) -> struct_pb2.Value:
    value = struct_pb2.Value()
    value.struct_value.update({"bytes": total, "part_size": PART, "delay_ms": delay_ms})
    return value


async def _wait_until(predicate: Callable[[], bool], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def _sent(emulator: RunningEmulator) -> int:
    return emulator.stats("firehose").stream_parts_sent


async def _paused(emulator: RunningEmulator, start: int) -> None:
    """Returns once the firehose has written WAITING parts since `start` (parts sent before
    the call): the reader, not reading meanwhile, finds them waiting."""
    await _wait_until(lambda: _sent(emulator) - start >= WAITING)


def _check_coalesced(messages: list[bytes], bound: int) -> None:
    assert b"".join(messages) == EXPECTED  # the same bytes, in order
    assert len(messages) < PARTS // 4, f"{len(messages)} messages for {PARTS} parts"
    assert max(len(m) for m in messages) > PART  # parts were joined
    assert max(len(m) for m in messages) <= bound


ROUTES = {
    **TEST_ROUTES,
    "firehose-lines": {"endpoint": "firehose", "mode": "stream", "framing": "lines"},
}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sagewire(emulator: RunningEmulator) -> AsyncIterator[Sagewire]:
    """The default bound (server.stream_coalesce_bytes unset)."""
    async with start_sagewire(emulator, routes=ROUTES) as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def small_bound(emulator: RunningEmulator) -> AsyncIterator[Sagewire]:
    async with start_sagewire(emulator, server={"stream_coalesce_bytes": 8 * 1024}) as server:
        yield server


async def _read_slowly_grpc(server: Sagewire, emulator: RunningEmulator) -> list[bytes]:
    start = _sent(emulator)
    call = server.inference.InvokeStream(
        invoke_pb2.InvokeStreamRequest(model="firehose", json=_firehose()), timeout=60
    )
    first = await call.read()
    assert isinstance(first, invoke_pb2.InvokeStreamResponse)
    await _paused(emulator, start)
    messages = [first.body]
    while (message := await call.read()) is not EOF:
        assert isinstance(message, invoke_pb2.InvokeStreamResponse)
        assert message.index == len(messages)  # one index per message, no gaps
        messages.append(message.body)
    return messages


async def test_grpc_slow_reader_gets_fewer_larger_messages_with_the_same_bytes(
    sagewire: Sagewire, emulator: RunningEmulator
) -> None:
    _check_coalesced(await _read_slowly_grpc(sagewire, emulator), DEFAULT_COALESCE_BYTES)


async def test_messages_stay_within_the_configured_bound(
    small_bound: Sagewire, emulator: RunningEmulator
) -> None:
    _check_coalesced(await _read_slowly_grpc(small_bound, emulator), 8 * 1024)


async def test_first_part_of_a_slow_stream_goes_out_alone_without_waiting(
    sagewire: Sagewire, emulator: RunningEmulator
) -> None:
    """The model writes one part, then waits 30 s: the first message must be that part,
    delivered while the model has written nothing else (sagewire did not wait for more)."""
    stats = emulator.stats("firehose")
    start = stats.stream_parts_sent
    call = sagewire.inference.InvokeStream(
        invoke_pb2.InvokeStreamRequest(
            model="firehose", json=_firehose(total=3 * PART, delay_ms=30_000)
        ),
        timeout=60,
    )
    first = await call.read()
    assert isinstance(first, invoke_pb2.InvokeStreamResponse)
    assert first.body == b"x" * (PART - 1) + b"\n"
    assert stats.stream_parts_sent - start == 1
    call.cancel()


async def test_coalescing_off_relays_one_message_per_part(emulator: RunningEmulator) -> None:
    async with start_sagewire(emulator, server={"stream_coalesce_bytes": 0}) as server:
        messages = await _read_slowly_grpc(server, emulator)
    assert messages == [b"x" * (PART - 1) + b"\n"] * PARTS


async def test_lines_framing_keeps_one_record_per_message(
    sagewire: Sagewire, emulator: RunningEmulator
) -> None:
    """Under lines framing a message is a record, however many are waiting."""
    start = _sent(emulator)
    call = sagewire.inference.InvokeStream(
        invoke_pb2.InvokeStreamRequest(model="firehose-lines", json=_firehose()), timeout=60
    )
    first = await call.read()
    assert isinstance(first, invoke_pb2.InvokeStreamResponse)
    await _paused(emulator, start)
    count = 1
    while (message := await call.read()) is not EOF:
        assert isinstance(message, invoke_pb2.InvokeStreamResponse)
        assert message.body == b"x" * (PART - 1) + b"\n"
        count += 1
    assert count == PARTS


async def test_rest_transcoded_stream_coalesces_records(
    sagewire: Sagewire, emulator: RunningEmulator
) -> None:
    """POST /v1/models/firehose:invokeStream (NDJSON): one record per coalesced message."""
    body = {"json": {"bytes": TOTAL, "part_size": PART}}
    start = _sent(emulator)
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{sagewire.rest_url}/v1/models/firehose:invokeStream", json=body) as response,
    ):
        assert response.status == 200
        first = await response.content.readline()
        await _paused(emulator, start)
        lines = [first, *[line async for line in response.content]]
    records: list[dict[str, Any]] = [json.loads(line) for line in lines if line.strip()]
    assert all("error" not in record for record in records)
    messages = [base64.b64decode(record["body"]) for record in records]
    _check_coalesced(messages, DEFAULT_COALESCE_BYTES)


async def test_raw_passthrough_stream_keeps_the_bytes(
    sagewire: Sagewire, emulator: RunningEmulator
) -> None:
    start = _sent(emulator)
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{sagewire.rest_url}/v1/models/firehose/invocations-response-stream",
            json={"bytes": TOTAL, "part_size": PART},
        ) as response,
    ):
        assert response.status == 200
        head = await response.content.readexactly(PART)
        await _paused(emulator, start)
        rest = await response.content.read()
    assert head + rest == EXPECTED


async def test_converse_raw_stream_turn_coalesces_chunks(
    sagewire: Sagewire, emulator: RunningEmulator
) -> None:
    turn = converse_pb2.ConverseTurn(turn_id="t1", json=_firehose())
    requests: asyncio.Queue[converse_pb2.ConverseRequest | None] = asyncio.Queue()
    await requests.put(
        converse_pb2.ConverseRequest(open=converse_pb2.ConverseOpen(model="firehose"))
    )
    await requests.put(converse_pb2.ConverseRequest(turn=turn))

    async def outgoing() -> AsyncIterator[converse_pb2.ConverseRequest]:
        while (request := await requests.get()) is not None:
            yield request

    start = _sent(emulator)
    call = sagewire.inference.Converse(outgoing(), timeout=60)
    chunks: list[bytes] = []
    async for response in call:
        kind = response.WhichOneof("kind")
        if kind == "chunk":
            if not chunks:
                await _paused(emulator, start)
            chunks.append(response.chunk.body)
        elif kind == "turn_end":
            assert response.turn_end.chunk_count == len(chunks)
            await requests.put(None)
        elif kind not in ("opened", "session"):
            pytest.fail(f"unexpected {kind}: {response}")
    _check_coalesced(chunks, DEFAULT_COALESCE_BYTES)
