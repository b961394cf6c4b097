"""Converse on `bidi` routes end to end: a grpc.aio client -> sagewire -> the HTTP/2 SDK (CRT)
-> the emulator's `bidi-echo` over TLS + HTTP/2, all on real loopback sockets. Nothing is
stubbed: duplex, errors and shutdown are observed in the gRPC stream and the emulator's counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf import json_format, struct_pb2
from google.rpc import error_details_pb2

from sagewire.config import ConfigError
from sagewire.emulator import Fault
from sagewire.emulator.server import RunningEmulator, running_emulator
from sagewire.v1 import common_pb2, converse_pb2, inference_service_pb2_grpc
from support import EOF, TEST_EMULATOR_CONFIG, Sagewire, failure, start_sagewire

BIDI = {"endpoint": "bidi-echo", "mode": "bidi"}
ROUTES: dict[str, dict[str, Any]] = {
    "bidi-echo": {**BIDI, "allow": ["target_variant"]},
    "bidi-b": {**BIDI, "defaults": {"target_variant": "B"}},
    "bidi-slow-reader": {**BIDI, "converse": {"max_buffered_chunks": 2}},
    "bidi-short": {**BIDI, "timeout_s": 0.5},
    "bidi-idle": {**BIDI, "converse": {"idle_timeout_s": 0.3}},
    "bidi-single": {**BIDI, "max_concurrency": 1},
    "bidi-missing": {"endpoint": "no-such-endpoint", "mode": "bidi"},
}
UTF8, BINARY = common_pb2.DATA_TYPE_UTF8, common_pb2.DATA_TYPE_BINARY
Response = converse_pb2.ConverseResponse
type Stub = inference_service_pb2_grpc.InferenceServiceAsyncStub


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def bidi_server(emulator: RunningEmulator) -> AsyncIterator[Sagewire]:
    async with start_sagewire(emulator, routes=ROUTES) as server:
        yield server


@pytest.fixture
def stub(bidi_server: Sagewire) -> Stub:
    return bidi_server.inference


def part(turn_id: str, text: str | None = None, **fields: Any) -> converse_pb2.ConverseRequest:
    if text is not None:
        fields["text"] = text
    return converse_pb2.ConverseRequest(turn=converse_pb2.ConverseTurn(turn_id=turn_id, **fields))


@dataclass
class Conversation:
    call: Any
    received: list[Response] = field(default_factory=list)

    async def send(self, *requests: converse_pb2.ConverseRequest) -> None:
        for request in requests:
            await self.call.write(request)

    async def read(self) -> Response | None:
        message = await asyncio.wait_for(self.call.read(), timeout=5)
        if message is EOF:
            return None
        assert isinstance(message, Response)
        self.received.append(message)
        return message

    async def next_chunk(self) -> converse_pb2.ConverseChunk:
        message = await self.read()
        assert message is not None
        assert message.WhichOneof("kind") == "chunk", message
        return message.chunk

    async def rest(self) -> list[Response]:
        """Everything up to the end of the stream; it must end with OK."""
        got = []
        while (message := await self.read()) is not None:
            got.append(message)
        assert await self.call.code() is grpc.StatusCode.OK
        return got


async def start(stub: Stub, model: str = "bidi-echo", **kwargs: Any) -> Conversation:
    call = stub.Converse(timeout=kwargs.pop("timeout", 10))  # type: ignore[call-arg]
    conversation = Conversation(call)
    await conversation.send(
        converse_pb2.ConverseRequest(open=converse_pb2.ConverseOpen(model=model, **kwargs))
    )
    first = await conversation.read()
    assert first is not None
    assert first.WhichOneof("kind") == "opened"
    assert first.opened.model == model
    return conversation


async def refused_at_open(stub: Stub, model: str, within_s: float = 5, **kwargs: Any) -> Any:
    """Open a Converse that must end before any message; its failure."""
    call = stub.Converse(timeout=10)  # type: ignore[call-arg]
    await call.write(
        converse_pb2.ConverseRequest(open=converse_pb2.ConverseOpen(model=model, **kwargs))
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await asyncio.wait_for(call.read(), timeout=within_s)
    return failure(caught.value)


def kinds(messages: list[Response]) -> list[tuple[str, str]]:
    """(kind, turn_id) of each message."""
    return [
        (kind, getattr(m, kind).turn_id)
        for m in messages
        if (kind := m.WhichOneof("kind")) in ("chunk", "turn_end", "turn_error")
    ]


def chunks(messages: list[Response]) -> list[tuple[str, bytes]]:
    return [(m.chunk.turn_id, m.chunk.body) for m in messages if m.WhichOneof("kind") == "chunk"]


def error_reason(status: Any) -> str:
    for packed in status.details:
        if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            packed.Unpack(info)
            return str(info.reason)
    return ""


async def eventually(check: Callable[[], bool], within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"condition still false after {within_s} s")
        await asyncio.sleep(0.01)


# -- duplex, parts and turns --------------------------------------------------------------------


async def test_duplex_each_echo_arrives_before_the_next_part_is_sent(
    emulator: RunningEmulator, stub: Stub
) -> None:
    talk = await start(stub)
    for count, word in enumerate(["one", "two", "three"], start=1):
        await talk.send(part("u1", word, partial=True))
        echo = await talk.next_chunk()
        assert (echo.turn_id, echo.body) == ("u1", word.upper().encode())
        assert (echo.data_type, echo.partial) == (UTF8, True)
        # The echo came back through sagewire while the caller's input is still open.
        stats = emulator.stats("bidi-echo")
        assert (stats.active_bidi_streams, stats.bidi_parts_received) == (1, count)
    await talk.send(part("u1", "!"))  # the turn's last part: CompletionState COMPLETE
    assert (await talk.next_chunk()).body == b"!"
    final = await talk.next_chunk()
    assert (final.turn_id, final.data_type, final.partial) == ("u1", UTF8, False)
    assert json_format.MessageToDict(final.json) == {"final": "onetwothree!"}
    end = await talk.read()
    assert end is not None
    assert end.turn_end.turn_id == "u1"
    assert (end.turn_end.chunk_count, end.turn_end.invoked_production_variant) == (5, "AllTraffic")
    assert end.turn_end.byte_count == len(b"ONETWOTHREE!") + len(final.body)
    await talk.call.done_writing()
    assert await talk.rest() == []
    await eventually(lambda: emulator.stats("bidi-echo").bidi_streams_completed == 1)


async def test_binary_text_and_json_parts_keep_their_data_type(stub: Stub) -> None:
    talk = await start(stub)
    await talk.send(part("b", body=b"\x00\xffabc", partial=True))
    binary = await talk.next_chunk()
    assert (binary.body, binary.data_type, binary.partial) == (b"\x00\xffABC", BINARY, True)
    assert not binary.HasField("json")
    await talk.send(part("b", "grüße", partial=True))
    text = await talk.next_chunk()
    assert (text.body, text.data_type) == ("GRüßE".encode(), UTF8)
    await talk.send(part("b", json=json_format.ParseDict({"a": [1, "x"]}, struct_pb2.Value())))
    as_json = await talk.next_chunk()  # sent as compact UTF8 JSON, echoed upper-cased
    assert (as_json.body, as_json.data_type) == (b'{"A":[1,"X"]}', UTF8)
    assert json_format.MessageToDict(as_json.json) == {"A": [1, "X"]}
    final = await talk.next_chunk()
    assert json.loads(final.body) == {"final": 'grüße{"a":[1,"x"]}'}  # bidi-echo: UTF8 only
    await talk.call.done_writing()
    ends = [m.turn_end for m in await talk.rest()]
    assert [(e.turn_id, e.chunk_count) for e in ends] == [("b", 4)]


async def test_turns_sent_all_at_once_are_tagged_by_completion_not_timing(
    emulator: RunningEmulator, stub: Stub
) -> None:
    # grpcurl-style: every message before reading anything, then half-close.
    talk = await start(stub)
    await talk.send(part("t1", "hello ", partial=True), part("t1", "world"), part("t2", "again"))
    await talk.call.done_writing()
    got = await talk.rest()
    assert kinds(got) == [
        ("chunk", "t1"),
        ("chunk", "t1"),
        ("chunk", "t1"),
        ("turn_end", "t1"),
        ("chunk", "t2"),
        ("chunk", "t2"),
        ("turn_end", "t2"),
    ]
    assert [body for _, body in chunks(got)] == [
        b"HELLO ",
        b"WORLD",
        b'{"final": "hello world"}',
        b"AGAIN",
        b'{"final": "hello worldagain"}',
    ]
    assert emulator.stats("bidi-echo").bidi_streams_completed == 1


async def test_target_variant_from_the_caller_or_the_route(stub: Stub) -> None:
    for model, options, variant in (
        ("bidi-echo", common_pb2.InvocationOptions(target_variant="B"), "B"),
        ("bidi-b", None, "B"),
        ("bidi-echo", None, "AllTraffic"),
    ):
        talk = await start(stub, model, options=options)
        await talk.send(part("t", "x"))
        await talk.call.done_writing()
        end = next(m.turn_end for m in await talk.rest() if m.HasField("turn_end"))
        assert end.invoked_production_variant == variant


async def test_refusals_travel_in_band_and_the_session_goes_on(stub: Stub) -> None:
    talk = await start(stub)
    await talk.send(
        part("t1", "a", partial=True),
        part("t2", "b"),  # t1 still open
        converse_pb2.ConverseRequest(cancel=converse_pb2.ConverseCancel(turn_id="t1")),
        part("t1", "c"),
        part("t1", "d"),  # t1 is complete: its id is used
        part("t3"),  # no payload
    )
    await talk.call.done_writing()
    got = await talk.rest()
    errors = {
        (m.turn_error.turn_id, error_reason(m.turn_error.status))
        for m in got
        if m.HasField("turn_error")
    }
    assert errors == {
        ("t2", "TURN_INPUT_OPEN"),
        ("t1", "TURN_NOT_CANCELLABLE"),
        ("t1", "DUPLICATE_TURN_ID"),
        ("t3", "INVALID_ARGUMENT"),
    }
    assert [body for turn_id, body in chunks(got)] == [b"A", b"C", b'{"final": "ac"}']
    assert [m.turn_end.turn_id for m in got if m.HasField("turn_end")] == ["t1"]


async def test_close_message_drains_like_a_half_close(
    emulator: RunningEmulator, stub: Stub
) -> None:
    # The echo takes 200 ms, so the stream is still draining when the late turn arrives.
    emulator.set_fault("bidi-echo", Fault(part_delay_ms=200))
    talk = await start(stub)
    await talk.send(part("t1", "x", partial=True))
    await talk.send(converse_pb2.ConverseRequest(close=converse_pb2.ConverseClose()))
    await talk.send(part("t1", "late"))
    got = await talk.rest()  # no done_writing: `close` ended the input
    assert chunks(got) == [("t1", b"X")]
    late = next(m.turn_error for m in got if m.HasField("turn_error"))
    assert error_reason(late.status) == "SESSION_CLOSING"
    assert [m.turn_end.turn_id for m in got if m.HasField("turn_end")] == ["t1"]


async def test_half_close_drains_then_ok(emulator: RunningEmulator, stub: Stub) -> None:
    talk = await start(stub)
    for i in range(5):
        await talk.send(part("t", f"p{i}", partial=True))
    await talk.call.done_writing()
    got = await talk.rest()
    assert chunks(got) == [("t", f"P{i}".encode()) for i in range(5)]
    assert got[-1].turn_end.chunk_count == 5  # the turn ends with the stream
    await eventually(lambda: emulator.stats("bidi-echo").bidi_streams_completed == 1)


async def test_a_slow_reader_gets_everything_in_order(stub: Stub) -> None:
    talk = await start(stub, "bidi-slow-reader")  # 2 chunks buffered at most
    for i in range(40):
        await talk.send(part("t", f"w{i} ", partial=True))
    await talk.call.done_writing()
    await asyncio.sleep(0.2)  # the echoes wait while this client does not read
    got = await talk.rest()
    assert [body for _, body in chunks(got)] == [f"W{i} ".encode() for i in range(40)]


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "error_code", "status", "reason"),
    [
        ("model_stream_error", "StreamBroken", grpc.StatusCode.UNAVAILABLE, "MODEL_STREAM_BROKEN"),
        (
            "model_stream_error",
            "ModelInvocationTimeExceeded",
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "MODEL_STREAM_TIMEOUT",
        ),
        (
            "internal_stream_failure",
            "StreamBroken",
            grpc.StatusCode.UNAVAILABLE,
            "SAGEMAKER_STREAM_FAILURE",
        ),
    ],
)
async def test_a_stream_error_after_n_parts_ends_the_call_with_its_status(
    emulator: RunningEmulator,
    stub: Stub,
    kind: Any,
    error_code: Any,
    status: grpc.StatusCode,
    reason: str,
) -> None:
    emulator.set_fault(
        "bidi-echo",
        Fault(stream_error_after_parts=2, stream_error=kind, stream_error_code=error_code),
    )
    talk = await start(stub)
    for word in ("a", "b"):
        await talk.send(part("t", word, partial=True))
        assert (await talk.next_chunk()).body == word.upper().encode()
    # The error follows the model's second part at once; the input is still open.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await talk.read()
    got = failure(caught.value)
    assert (got.code, got.reason) == (status, reason)
    assert "Injected stream error" in got.message
    assert emulator.stats("bidi-echo").bidi_streams_failed == 1


async def test_a_dropped_upstream_connection_ends_the_call_unavailable(
    emulator: RunningEmulator, stub: Stub
) -> None:
    emulator.set_fault("bidi-echo", Fault(drop_after_parts=1))
    talk = await start(stub)
    await talk.send(part("t", "a", partial=True))
    assert (await talk.next_chunk()).body == b"A"
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # the input is still open
        await talk.read()
    got = failure(caught.value)
    assert (got.code, got.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_CONNECTION_LOST")
    assert got.detail(error_details_pb2.RetryInfo) is not None


async def test_the_model_ending_first_ends_the_call_with_ok(
    emulator: RunningEmulator, stub: Stub
) -> None:
    emulator.set_fault("bidi-echo", Fault(close_after_parts=1))
    talk = await start(stub)
    await talk.send(part("t", "only", partial=True))
    # No half-close from this side: the call ends because the model ended. That the ended
    # stream is not half-closed (a wait of the whole close bound) is pinned in
    # test_bidi_adapter.py::test_upstream_closing_first_ends_cleanly_without_hanging.
    got = await talk.rest()
    assert kinds(got) == [("chunk", "t"), ("turn_end", "t")]
    # The emulator counts the stream once its handler has returned, after the END_STREAM.
    await eventually(lambda: emulator.stats("bidi-echo").bidi_streams_completed == 1, within_s=10)


@pytest.mark.parametrize(
    ("model", "fault", "status", "reason"),
    [
        ("bidi-missing", None, grpc.StatusCode.NOT_FOUND, "ENDPOINT_NOT_FOUND"),
        ("bidi-echo", Fault(error="throttling"), grpc.StatusCode.RESOURCE_EXHAUSTED, "THROTTLED"),
        ("bidi-echo", Fault(error="model_error"), grpc.StatusCode.INTERNAL, "MODEL_ERROR"),
    ],
)
async def test_errors_before_the_stream_end_the_call_before_any_message(
    emulator: RunningEmulator,
    stub: Stub,
    model: str,
    fault: Fault | None,
    status: grpc.StatusCode,
    reason: str,
) -> None:
    emulator.set_fault("bidi-echo", fault)
    got = await refused_at_open(stub, model)
    assert (got.code, got.reason) == (status, reason)
    if reason == "MODEL_ERROR":
        assert got.detail(common_pb2.ModelErrorDetail).original_status_code == 500


@pytest.mark.parametrize(
    ("fields", "field_name", "reason"),
    [
        ({"content_type": "audio/wav"}, "content_type", "INVALID_ARGUMENT"),
        ({"accept": "text/plain"}, "accept", "INVALID_ARGUMENT"),
        ({"framing": common_pb2.FRAMING_LINES}, "framing", "INVALID_ARGUMENT"),
        (
            {"options": common_pb2.InvocationOptions(custom_attributes="x")},
            "options.custom_attributes",
            "OPTION_NOT_SUPPORTED",  # the HTTP/2 stream has no CustomAttributes at all
        ),
    ],
)
async def test_an_opening_a_bidi_stream_cannot_honour_is_refused(
    stub: Stub, fields: dict[str, Any], field_name: str, reason: str
) -> None:
    got = await refused_at_open(stub, "bidi-echo", **fields)
    assert (got.code, got.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    assert got.detail(error_details_pb2.BadRequest).field_violations[0].field == field_name


async def test_the_route_concurrency_bound_counts_open_streams(stub: Stub) -> None:
    first = await start(stub, "bidi-single")
    got = await refused_at_open(stub, "bidi-single")
    assert (got.code, got.reason) == (grpc.StatusCode.UNAVAILABLE, "ROUTE_CONCURRENCY_LIMIT")
    await first.call.done_writing()
    await first.rest()
    second = await start(stub, "bidi-single")  # the slot came back
    await second.call.done_writing()
    await second.rest()


async def test_an_untrusted_certificate_gives_a_clear_status() -> None:
    # The CRT reports a failed certificate check only after a 10-30 s anti-timing delay
    # (UPSTREAM_TLS_FAILURE); aws.read_timeout_s bounds the wait. An emulator of its own: the
    # half-made TLS connection lingers after the test.
    async with (
        running_emulator(TEST_EMULATOR_CONFIG, bidi=True) as other,
        start_sagewire(
            other, routes={"bidi-echo": BIDI}, aws={"ca_bundle": None, "read_timeout_s": 0.5}
        ) as sw,
    ):
        started = time.monotonic()
        got = await refused_at_open(sw.inference, "bidi-echo", within_s=8)
    assert (got.code, got.reason) == (grpc.StatusCode.DEADLINE_EXCEEDED, "UPSTREAM_READ_TIMEOUT")
    assert "bidirectional stream" in got.message
    assert time.monotonic() - started < 8  # below the CRT's 10 s minimum delay


async def test_a_missing_ca_bundle_stops_sagewire_at_start(emulator: RunningEmulator) -> None:
    with pytest.raises(ConfigError) as caught:
        async with start_sagewire(
            emulator, routes={"bidi-echo": BIDI}, aws={"ca_bundle": "/nonexistent/ca.pem"}
        ):
            pass
    assert "/nonexistent/ca.pem" in str(caught.value)


# -- cancellation, deadlines, bounds ------------------------------------------------------------


async def test_cancelling_the_call_aborts_the_upstream_stream(
    emulator: RunningEmulator, stub: Stub
) -> None:
    # The model is still working on its answer (it waits 60 s before each part) when the
    # caller cancels: the upstream stream must be cut, not left to finish. The wait for the
    # abort is generous (a loaded machine); the model's delay is far longer still.
    emulator.set_fault("bidi-echo", Fault(part_delay_ms=60_000))
    talk = await start(stub)
    await talk.send(part("t", "hi", partial=True))
    await eventually(lambda: emulator.stats("bidi-echo").bidi_parts_received == 1)
    talk.call.cancel()
    await eventually(lambda: emulator.stats("bidi-echo").bidi_streams_aborted == 1, within_s=15)
    stats = emulator.stats("bidi-echo")
    assert (stats.active_bidi_streams, stats.bidi_parts_sent) == (0, 0)


async def test_the_callers_deadline_aborts_the_upstream_stream(
    emulator: RunningEmulator, stub: Stub
) -> None:
    # The deadline also has to cover opening the stream (TLS + HTTP/2 to the emulator), which
    # took over 0.5 s on a loaded CI machine: 3 s, against an echo that would take 60 s.
    emulator.set_fault("bidi-echo", Fault(part_delay_ms=60_000))
    talk = await start(stub, timeout=3)
    await talk.send(part("t", "hi", partial=True))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await talk.read()  # the echo would take 60 s
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    await eventually(lambda: emulator.stats("bidi-echo").bidi_streams_aborted == 1, within_s=15)
    assert emulator.stats("bidi-echo").bidi_parts_sent == 0


async def read_only_opened(call: Any) -> None:
    """Read `call` to its end; `opened` is the only message it may carry."""
    while (message := await asyncio.wait_for(call.read(), timeout=5)) is not EOF:
        assert message.WhichOneof("kind") == "opened", message


async def ended_by_short_route(stub: Stub) -> float:
    """Open a Converse on `bidi-short` (timeout_s 0.5) and read it to its end, which must be
    the route's DEADLINE_EXCEEDED; the seconds it took. `opened` is not awaited first: the
    route's 0.5 s covers opening the upstream stream too, and on a loaded machine the open alone
    can take that long (CI once did)."""
    started = time.monotonic()
    call = stub.Converse(timeout=10)  # type: ignore[call-arg]
    await call.write(
        converse_pb2.ConverseRequest(open=converse_pb2.ConverseOpen(model="bidi-short"))
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await read_only_opened(call)
    elapsed = time.monotonic() - started
    got = failure(caught.value)
    assert (got.code, got.reason) == (grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED")
    assert "bidi-short" in got.message
    return elapsed


async def test_the_routes_timeout_bounds_the_whole_stream(
    emulator: RunningEmulator, stub: Stub
) -> None:
    assert await ended_by_short_route(stub) >= 0.5  # the route's bound ended it
    # Whatever was opened upstream by then is reset, none is left open.
    await eventually(lambda: emulator.stats("bidi-echo").active_bidi_streams == 0)
    stats = emulator.stats("bidi-echo")
    assert stats.bidi_streams_aborted == stats.bidi_streams_started


async def test_an_upstream_open_slower_than_the_routes_timeout_is_deadline_exceeded(
    emulator: RunningEmulator, stub: Stub
) -> None:
    emulator.set_fault("bidi-echo", Fault(latency_ms=3000))  # the model answers the open late
    assert 0.5 <= await ended_by_short_route(stub) < 2.5  # the route's 0.5 s, not the model's 3 s


async def test_an_idle_session_ends(emulator: RunningEmulator, stub: Stub) -> None:
    talk = await start(stub, "bidi-idle")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await talk.read()
    assert failure(caught.value).reason == "SESSION_IDLE_TIMEOUT"
    await eventually(lambda: emulator.stats("bidi-echo").bidi_streams_aborted == 1)


async def test_stopping_sagewire_closes_open_streams_upstream(emulator: RunningEmulator) -> None:
    # Still answering at the stop (60 s per part): the stop must cut the stream, not wait for
    # it; the bounds leave a loaded machine room and stay far below the model's 60 s.
    emulator.set_fault("bidi-echo", Fault(part_delay_ms=60_000))
    async with start_sagewire(emulator, routes=ROUTES) as sw:
        talk = await start(sw.inference)
        await talk.send(part("t", "hi", partial=True))
        await eventually(lambda: emulator.stats("bidi-echo").bidi_parts_received == 1)
        started = time.monotonic()
        await sw.server.stop(grace_s=0.1)
        with pytest.raises(grpc.aio.AioRpcError):
            await talk.read()
        assert time.monotonic() - started < 10
    await eventually(lambda: emulator.stats("bidi-echo").bidi_streams_aborted == 1, within_s=15)
    assert emulator.stats("bidi-echo").active_bidi_streams == 0


def connections_on(port: int) -> int:
    """This process's connected TCP sockets with either end on `port` (the emulator's bidi
    listener runs in this process too, so both ends of each stream are counted)."""
    count, seen = 0, set()
    for name in os.listdir("/proc/self/fd"):
        try:
            inode = os.readlink(f"/proc/self/fd/{name}")
            if not inode.startswith("socket:") or inode in seen:
                continue
            seen.add(inode)
            sock = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue
        with sock, contextlib.suppress(OSError):
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                ends = (sock.getsockname()[1], sock.getpeername()[1])  # listeners: no peer
                count += port in ends
    return count


async def test_100_sequential_sessions_leak_no_connection_or_fd(
    emulator: RunningEmulator, stub: Stub
) -> None:
    async def one() -> None:
        talk = await start(stub)
        await talk.send(part("t", "x"))
        await talk.call.done_writing()
        assert kinds(await talk.rest()) == [("chunk", "t"), ("chunk", "t"), ("turn_end", "t")]

    await one()  # warm-up: the CRT makes its event loop and resolver lazily
    fds_before = len(os.listdir("/proc/self/fd"))
    for _ in range(100):
        await one()
    assert emulator.bidi_url is not None
    port = int(emulator.bidi_url.rsplit(":", 1)[1])
    # Both ends close asynchronously (the CRT on its own threads, the emulator on its next
    # loop turn) and the emulator counts a stream once its handler has returned: wait on the
    # state, with room for a loaded machine. A leak never gets there.
    await eventually(lambda: connections_on(port) == 0, within_s=15)
    await eventually(lambda: len(os.listdir("/proc/self/fd")) <= fds_before, within_s=15)
    stats = emulator.stats("bidi-echo")
    await eventually(lambda: (stats.bidi_streams_completed, stats.active_bidi_streams) == (101, 0))
