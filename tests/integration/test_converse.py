"""Converse end to end: real grpc.aio bidirectional streams to sagewire, real aioboto3 to the
emulator's stateful `chat`, `tokens`, `echo` and `firehose` models."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf import json_format, struct_pb2
from google.rpc import error_details_pb2

from sagewire.emulator.server import RunningEmulator
from sagewire.v1 import common_pb2, converse_pb2, inference_service_pb2_grpc
from support import EOF, Sagewire, failure, start_sagewire

OPEN = '{"requestType": "NEW_SESSION"}'
CLOSE = '{"requestType": "CLOSE"}'
SESSIONS = {"sessions": True, "open_body": OPEN, "close_body": CLOSE}
CHAT = {"endpoint": "chat", "mode": "stream", "framing": "lines", "timeout_s": 60}

ROUTES: dict[str, dict[str, Any]] = {
    "chat": {**CHAT, "converse": SESSIONS},
    "chat-reopen": {**CHAT, "converse": {**SESSIONS, "reopen_expired": True}},
    "chat-first-turn": {**CHAT, "converse": {"sessions": True, "close_body": CLOSE}},
    "chat-rt": {
        "endpoint": "chat",
        "mode": "realtime",
        "framing": "lines",
        "converse": {"sessions": True, "close_body": CLOSE},
    },
    "chat-idle": {**CHAT, "converse": {**SESSIONS, "idle_timeout_s": 0.3}},
    # max_duration_s: the session's clock starts at the open; the turn must reach SageMaker
    # before it runs out, on a loaded machine too (0.5 s did not always; the turn takes 10 s).
    "chat-short": {**CHAT, "converse": {**SESSIONS, "max_duration_s": 4.0}},
    "chat-few": {**CHAT, "converse": {**SESSIONS, "max_turns": 2}},
    "chat-stateless": CHAT,
    "echo": {"endpoint": "echo", "allow": ["session_id"]},
    "tokens": {
        "endpoint": "tokens",
        "mode": "stream",
        "framing": "lines",
        "converse": {"max_concurrent_turns": 3},
    },
    "tokens-serial": {
        "endpoint": "tokens",
        "mode": "stream",
        "framing": "lines",
        "converse": {"max_queued_turns": 1},
    },
    "firehose": {
        "endpoint": "firehose",
        "mode": "stream",
        "framing": "raw",
        "converse": {"max_buffered_chunks": 4},
    },
    "firehose-short": {
        "endpoint": "firehose",
        "mode": "stream",
        "converse": {"max_buffered_chunks": 4, "max_duration_s": 4.0},
    },
    "async-only": {
        "endpoint": "echo",
        "mode": "async",
        "async": {"output_prefix": "s3://sagewire-emulator/async-output/"},
    },
}

Response = converse_pb2.ConverseResponse


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def converse_server(emulator: RunningEmulator) -> AsyncIterator[Sagewire]:
    async with start_sagewire(emulator.url, routes=ROUTES) as server:
        yield server


@pytest.fixture
def stub(converse_server: Sagewire) -> inference_service_pb2_grpc.InferenceServiceAsyncStub:
    return converse_server.inference


def open_(model: str, **fields: Any) -> converse_pb2.ConverseRequest:
    return converse_pb2.ConverseRequest(open=converse_pb2.ConverseOpen(model=model, **fields))


def value(doc: Any) -> struct_pb2.Value:
    return json_format.ParseDict(doc, struct_pb2.Value())


def turn(turn_id: str, doc: Any = None, **fields: Any) -> converse_pb2.ConverseRequest:
    if doc is not None:
        fields["json"] = value(doc)
    return converse_pb2.ConverseRequest(turn=converse_pb2.ConverseTurn(turn_id=turn_id, **fields))


def cancel(turn_id: str) -> converse_pb2.ConverseRequest:
    return converse_pb2.ConverseRequest(cancel=converse_pb2.ConverseCancel(turn_id=turn_id))


@dataclass
class Conversation:
    """One Converse call and everything read from it so far."""

    call: Any
    received: list[Response] = field(default_factory=list)

    async def send(self, *requests: converse_pb2.ConverseRequest) -> None:
        for request in requests:
            await self.call.write(request)

    async def read(self) -> Response | None:
        message = await self.call.read()
        if message is EOF:
            return None
        assert isinstance(message, Response)
        self.received.append(message)
        return message

    async def until(self, done: Callable[[Response], bool]) -> list[Response]:
        got = []
        while (message := await self.read()) is not None:
            got.append(message)
            if done(message):
                return got
        raise AssertionError(f"stream ended before the condition; got {got}")

    async def turn_done(self, turn_id: str) -> list[Response]:
        return await self.until(lambda m: _ends(m, turn_id))

    async def finish(self) -> list[Response]:
        """Half-close and read to the end; raises the stream's error status."""
        await self.call.done_writing()
        got = []
        while (message := await self.read()) is not None:
            got.append(message)
        assert await self.call.code() is grpc.StatusCode.OK
        return got


def _ends(message: Response, turn_id: str) -> bool:
    kind = message.WhichOneof("kind")
    return kind in ("turn_end", "turn_error") and getattr(message, kind).turn_id == turn_id


async def start(
    stub: inference_service_pb2_grpc.InferenceServiceAsyncStub, model: str, **kwargs: Any
) -> tuple[Conversation, converse_pb2.ConverseOpened]:
    # No request iterator: grpc.aio then takes requests through call.write().
    call = stub.Converse(timeout=kwargs.pop("timeout", 30))  # type: ignore[call-arg]
    conversation = Conversation(call)
    await conversation.send(open_(model, **kwargs))
    first = await conversation.read()
    assert first is not None
    assert first.WhichOneof("kind") == "opened"
    return conversation, first.opened


async def started_with(
    stub: inference_service_pb2_grpc.InferenceServiceAsyncStub,
    model: str,
    *requests: converse_pb2.ConverseRequest,
) -> Conversation:
    """A Converse whose first requests are written right behind the open, without waiting for
    `opened` (it stays unread: `until` reads it first)."""
    call = stub.Converse(timeout=30)  # type: ignore[call-arg]
    conversation = Conversation(call)
    await conversation.send(open_(model), *requests)
    return conversation


LONG_TEXT = " ".join(f"w{i}" for i in range(100))


def records(messages: list[Response], turn_id: str) -> list[Any]:
    return [
        json_format.MessageToDict(m.chunk.json)
        for m in messages
        if m.WhichOneof("kind") == "chunk" and m.chunk.turn_id == turn_id
    ]


def end_of(messages: list[Response], turn_id: str) -> Response:
    return next(m for m in messages if _ends(m, turn_id))


def turn_status(messages: list[Response], turn_id: str) -> tuple[str, str]:
    """(gRPC code name, ErrorInfo reason) of a turn_error."""
    status = end_of(messages, turn_id).turn_error.status
    reason = ""
    for packed in status.details:
        if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            packed.Unpack(info)
            reason = info.reason
    return grpc.StatusCode(_CODES[status.code]).name, reason


_CODES = {code.value[0]: code.value for code in grpc.StatusCode}


def expected(turn_no: int, previous: str | None, text: str) -> list[Any]:
    words = [{"token": w, "index": float(i)} for i, w in enumerate(text.split())]
    return [
        {"turn": float(turn_no), "previous": previous},
        *words,
        {"done": True, "turn": float(turn_no)},
    ]


async def _eventually(check: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


# -- sessions and turns ---------------------------------------------------------------------


async def test_every_turn_reaches_the_same_session(stub: Any, emulator: RunningEmulator) -> None:
    conversation, opened = await start(stub, "chat")
    assert opened.model == "chat"
    assert opened.session_id
    assert emulator.sessions("chat").live_ids() == [opened.session_id]
    assert opened.session_expires_at.seconds - time.time() > 60
    texts = ["hello there", "how are you", "goodbye"]
    for n, text in enumerate(texts, start=1):
        await conversation.send(turn(f"t{n}", {"text": text}))
        got = await conversation.turn_done(f"t{n}")
        previous = texts[n - 2] if n > 1 else None
        assert records(got, f"t{n}") == expected(n, previous, text)
        end = end_of(got, f"t{n}").turn_end
        assert end.invoked_production_variant == "AllTraffic"
        assert end.chunk_count == len(text.split()) + 2
        assert end.byte_count == sum(len(m.chunk.body) for m in got if m.HasField("chunk"))
    assert await conversation.finish() == []
    # Ending the stream closed the SageMaker session with the route's close request.
    assert emulator.sessions("chat").counters.closed == 1
    assert emulator.sessions("chat").live_ids() == []


async def test_turns_sent_at_once_run_strictly_in_order(stub: Any) -> None:
    conversation, _ = await start(stub, "chat")
    texts = ["one a", "two b", "three c"]
    await conversation.send(
        *(turn(f"t{i}", {"text": t, "delay_ms": 5}) for i, t in enumerate(texts))
    )
    got = await conversation.finish()
    tagged = [m.chunk.turn_id for m in got if m.HasField("chunk")]
    # One turn at a time (the default): all of t0, then all of t1, then all of t2.
    assert tagged == sorted(tagged)
    for i, text in enumerate(texts):
        assert records(got, f"t{i}") == expected(i + 1, texts[i - 1] if i else None, text)


async def test_concurrent_turns_interleave_but_keep_order_within_a_turn(stub: Any) -> None:
    conversation, opened = await start(stub, "tokens")
    assert opened.session_id == ""  # no stateful sessions on this route
    words = {f"t{i}": [f"{i}w{j}" for j in range(6)] for i in range(3)}
    await conversation.send(
        *(turn(t, {"text": " ".join(w), "delay_ms": 30}) for t, w in words.items())
    )
    got = await conversation.finish()
    tagged = [m.chunk.turn_id for m in got if m.HasField("chunk")]
    switches = sum(1 for a, b in itertools.pairwise(tagged) if a != b)
    assert switches > 2, f"turns did not overlap: {tagged}"
    for turn_id, turn_words in words.items():
        lines = [{"token": w, "index": float(i)} for i, w in enumerate(turn_words)]
        assert records(got, turn_id) == [*lines, {"done": True, "count": 6.0}]
        assert end_of(got, turn_id).HasField("turn_end")


async def test_cancel_mid_turn_stops_the_model_and_the_session_goes_on(
    stub: Any, emulator: RunningEmulator
) -> None:
    conversation, _ = await start(stub, "chat")
    long_text = " ".join(f"w{i}" for i in range(200))
    await conversation.send(turn("long", {"text": long_text, "delay_ms": 100}))  # 20 s
    await conversation.until(lambda m: m.HasField("chunk") and m.chunk.turn_id == "long")
    await conversation.until(lambda m: m.HasField("chunk"))
    await conversation.send(cancel("long"))
    got = await conversation.turn_done("long")
    assert turn_status(got, "long") == ("CANCELLED", "TURN_CANCELLED")
    stats = emulator.stats("chat")
    await _eventually(lambda: stats.streams_aborted == 1)
    sent = stats.stream_parts_sent
    await asyncio.sleep(0.2)
    assert stats.stream_parts_sent == sent  # the model stopped producing
    assert stats.active_streams == 0
    # The same session answers the next turn; the model saw the cancelled one start.
    await conversation.send(turn("next", {"text": "still here"}))
    got = await conversation.turn_done("next")
    assert records(got, "next") == expected(2, long_text, "still here")
    await conversation.finish()


async def test_a_failed_turn_is_reported_in_band_and_the_next_one_succeeds(stub: Any) -> None:
    conversation, _ = await start(stub, "chat")
    await conversation.send(turn("bad", {"prompt": "no text field"}))
    got = await conversation.turn_done("bad")
    assert turn_status(got, "bad") == ("INVALID_ARGUMENT", "MODEL_ERROR")
    status = end_of(got, "bad").turn_error.status
    detail = common_pb2.ModelErrorDetail()
    assert any(d.Unpack(detail) for d in status.details if d.Is(detail.DESCRIPTOR))
    assert detail.original_status_code == 400
    assert '"text"' in detail.original_message
    await conversation.send(turn("good", {"text": "fine now"}))
    got = await conversation.turn_done("good")
    assert records(got, "good") == expected(1, None, "fine now")
    await conversation.finish()


async def test_half_close_lets_the_turn_in_flight_finish(
    stub: Any, emulator: RunningEmulator
) -> None:
    conversation, _ = await start(stub, "chat")
    await conversation.send(turn("t1", {"text": "a b c d", "delay_ms": 50}))
    got = await conversation.finish()  # half-close at once; status OK checked inside
    assert records(got, "t1") == expected(1, None, "a b c d")
    assert got[-1].WhichOneof("kind") == "turn_end"
    assert emulator.sessions("chat").counters.closed == 1


async def test_close_message_ends_the_session_like_a_half_close(stub: Any) -> None:
    conversation, _ = await start(stub, "chat")
    await conversation.send(
        turn("t1", {"text": "x y", "delay_ms": 20}),
        converse_pb2.ConverseRequest(close=converse_pb2.ConverseClose()),
        turn("late", {"text": "too late"}),
    )
    got = await conversation.finish()
    assert turn_status(got, "late") == ("FAILED_PRECONDITION", "SESSION_CLOSING")
    assert records(got, "t1") == expected(1, None, "x y")


# -- route modes ----------------------------------------------------------------------------


async def test_realtime_route_answers_each_turn_whole(stub: Any) -> None:
    conversation, _ = await start(stub, "echo")
    await conversation.send(turn("j", {"inputs": [1, 2]}))
    got = await conversation.turn_done("j")
    chunks = [m.chunk for m in got if m.HasField("chunk")]
    assert [c.body for c in chunks] == [b'{"inputs":[1,2]}']
    assert json_format.MessageToDict(chunks[0].json) == {"inputs": [1.0, 2.0]}
    end = end_of(got, "j").turn_end
    assert (end.invoked_production_variant, end.chunk_count, end.byte_count) == (
        "AllTraffic",
        1,
        16,
    )
    await conversation.send(turn("b", body=b"raw bytes", content_type="text/plain"))
    got = await conversation.turn_done("b")
    assert [(m.chunk.body, m.chunk.HasField("json")) for m in got if m.HasField("chunk")] == [
        (b"raw bytes", False)
    ]
    await conversation.finish()


async def test_realtime_route_first_turn_opens_the_session(
    stub: Any, emulator: RunningEmulator
) -> None:
    conversation, opened = await start(stub, "chat-rt")
    assert opened.session_id == ""  # no open request: the first turn opens it
    await conversation.send(turn("t1", {"text": "hi there"}))
    got = await conversation.turn_done("t1")
    assert got[0].WhichOneof("kind") == "session"
    session = got[0].session
    assert (session.turn_id, session.reopened) == ("t1", False)
    assert emulator.sessions("chat").is_live(session.session_id)
    assert records(got, "t1") == expected(1, None, "hi there")
    await conversation.send(turn("t2", {"text": "again"}))
    got = await conversation.turn_done("t2")
    assert records(got, "t2") == expected(2, "hi there", "again")
    await conversation.finish()
    assert not emulator.sessions("chat").is_live(session.session_id)


async def test_stream_route_first_turn_opens_with_invoke_endpoint_then_streams(
    stub: Any, emulator: RunningEmulator
) -> None:
    conversation, _ = await start(stub, "chat-first-turn")
    await conversation.send(turn("t1", {"text": "one"}), turn("t2", {"text": "two"}))
    got = await conversation.finish()
    assert got[0].WhichOneof("kind") == "session"
    assert records(got, "t1") == expected(1, None, "one")
    assert records(got, "t2") == expected(2, "one", "two")
    # NEW_SESSION is refused on response streams: only the second turn streamed.
    assert emulator.stats("chat").streams_started == 1


async def test_a_route_without_sessions_keeps_no_memory(stub: Any) -> None:
    conversation, _ = await start(stub, "chat-stateless")
    await conversation.send(turn("t1", {"text": "a"}), turn("t2", {"text": "b"}))
    got = await conversation.finish()
    assert records(got, "t2")[0] == {"turn": 1.0, "previous": None}


# -- sessions SageMaker no longer accepts ---------------------------------------------------


async def test_expired_session_ends_the_converse_clearly(
    stub: Any, emulator: RunningEmulator
) -> None:
    conversation, opened = await start(stub, "chat")
    emulator.sessions("chat").expire(opened.session_id)
    await conversation.send(turn("t1", {"text": "anyone?"}))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await conversation.until(lambda m: False)
    f = failure(caught.value)
    assert (f.code, f.reason) == (grpc.StatusCode.ABORTED, "SESSION_REJECTED")
    assert "has expired" in f.message
    assert f.detail(error_details_pb2.ErrorInfo).metadata["turn_id"] == "t1"


async def test_expired_session_is_reopened_where_the_route_says_so(
    stub: Any, emulator: RunningEmulator
) -> None:
    conversation, opened = await start(stub, "chat-reopen")
    await conversation.send(turn("t1", {"text": "first"}))
    await conversation.turn_done("t1")
    emulator.sessions("chat").expire(opened.session_id)
    await conversation.send(turn("t2", {"text": "second"}))
    got = await conversation.turn_done("t2")
    assert got[0].WhichOneof("kind") == "session"
    assert got[0].session.reopened
    assert got[0].session.turn_id == ""  # the route's open request opened it
    assert got[0].session.session_id not in ("", opened.session_id)
    # A new session: the model's memory of "first" is gone.
    assert records(got, "t2") == expected(1, None, "second")
    await conversation.finish()


# -- limits ---------------------------------------------------------------------------------


async def test_idle_session_ends_with_deadline_exceeded(
    stub: Any, emulator: RunningEmulator
) -> None:
    # The idle clock starts when sagewire sends `opened`: after `began`, before `opened` is
    # read here. So the end comes at least 0.3 s after `began` however slow the open was; the
    # upper bound is from `opened` on, with room for a loaded machine.
    began = time.monotonic()
    conversation, _ = await start(stub, "chat-idle")
    opened = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await conversation.until(lambda m: False)
    assert time.monotonic() - began >= 0.3
    assert time.monotonic() - opened < 10
    f = failure(caught.value)
    assert (f.code, f.reason) == (grpc.StatusCode.DEADLINE_EXCEEDED, "SESSION_IDLE_TIMEOUT")
    assert "idle_timeout_s" in f.message
    assert emulator.sessions("chat").counters.closed == 1


async def test_a_running_turn_is_not_idle(stub: Any) -> None:
    # The turn and the half-close go right behind the open: the client's own pace (on a loaded
    # machine) must not count as the session's idleness before or after the turn.
    conversation = await started_with(
        stub, "chat-idle", turn("t1", {"text": "a b c d e f", "delay_ms": 100})
    )
    await conversation.call.done_writing()
    got = await conversation.turn_done("t1")  # 0.5 s, longer than the idle timeout
    assert end_of(got, "t1").HasField("turn_end")
    assert await conversation.read() is None  # then the session ends with the half-close
    assert await conversation.call.code() is grpc.StatusCode.OK


async def test_maximum_duration_ends_the_session_and_its_turns(
    stub: Any, emulator: RunningEmulator
) -> None:
    # The turn (100 words, 100 ms each: 10 s) outlasts the session (4 s) by far. It goes out with
    # the open, so the client's own latency does not eat into the session's clock.
    conversation = await started_with(
        stub, "chat-short", turn("t1", {"text": LONG_TEXT, "delay_ms": 100})
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await conversation.until(lambda m: False)
    f = failure(caught.value)
    assert (f.code, f.reason) == (grpc.StatusCode.DEADLINE_EXCEEDED, "SESSION_MAX_DURATION")
    assert emulator.stats("chat").streams_started == 1  # the turn was running upstream
    await _eventually(lambda: emulator.stats("chat").streams_aborted == 1, within=10)
    assert emulator.sessions("chat").counters.closed == 1


async def test_maximum_duration_holds_while_the_client_is_not_reading(
    stub: Any, emulator: RunningEmulator
) -> None:
    conversation = await started_with(
        stub, "firehose-short", turn("big", {"bytes": 1024**3, "part_size": 64 * 1024})
    )
    stats = emulator.stats("firehose")
    # Not reading: sagewire's writes stall, yet the session still ends upstream.
    await _eventually(lambda: stats.streams_aborted == 1, within=10)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await conversation.until(lambda m: False)
    assert failure(caught.value).reason == "SESSION_MAX_DURATION"
    assert stats.stream_parts_sent * 64 * 1024 < 64 * 1024 * 1024


async def test_turns_past_the_maximum_are_refused_in_band(stub: Any) -> None:
    conversation, _ = await start(stub, "chat-few")
    await conversation.send(*(turn(f"t{i}", {"text": "x"}) for i in range(3)))
    got = await conversation.finish()
    assert turn_status(got, "t2") == ("RESOURCE_EXHAUSTED", "SESSION_TURN_LIMIT")
    assert end_of(got, "t1").HasField("turn_end")


async def test_queue_bound_and_cancelling_a_queued_turn(stub: Any) -> None:
    conversation, _ = await start(stub, "tokens-serial")
    slow = {"text": "a b c d e", "delay_ms": 40}
    await conversation.send(turn("t1", slow), turn("t2", slow), turn("t3", slow))
    got = await conversation.turn_done("t3")
    assert turn_status(got, "t3") == ("RESOURCE_EXHAUSTED", "TURN_QUEUE_FULL")
    await conversation.send(cancel("t2"))
    got = await conversation.turn_done("t2")
    assert turn_status(got, "t2") == ("CANCELLED", "TURN_CANCELLED")
    assert not records(got, "t2")  # never started
    got = await conversation.finish()
    assert end_of(conversation.received, "t1").HasField("turn_end")


async def test_slow_reader_throttles_the_model_instead_of_buffering(
    stub: Any, emulator: RunningEmulator
) -> None:
    total, part = 64 * 1024 * 1024, 64 * 1024
    conversation, _ = await start(stub, "firehose", timeout=60)
    await conversation.send(turn("big", {"bytes": total, "part_size": part}))
    await conversation.until(lambda m: m.HasField("chunk"))
    stats = emulator.stats("firehose")
    await asyncio.sleep(0.8)
    paused = stats.stream_parts_sent
    await asyncio.sleep(0.4)
    assert stats.stream_parts_sent == paused  # stalled, not trickling into a buffer
    produced = paused * part
    assert produced < 24 * 1024 * 1024, f"{produced} bytes produced while the reader paused"
    got = await conversation.turn_done("big")
    received = part + sum(len(m.chunk.body) for m in got if m.HasField("chunk"))
    assert received == total
    assert end_of(got, "big").turn_end.byte_count == total
    await conversation.finish()


async def test_cancelling_the_call_cancels_every_turn(stub: Any, emulator: RunningEmulator) -> None:
    conversation, _ = await start(stub, "tokens")
    words = " ".join(f"w{i}" for i in range(100))
    # 10 s a turn: all three are still running once the last has started, however slowly.
    await conversation.send(*(turn(f"t{i}", {"text": words, "delay_ms": 100}) for i in range(3)))
    stats = emulator.stats("tokens")
    await _eventually(lambda: stats.active_streams == 3)
    conversation.call.cancel()
    await _eventually(lambda: stats.streams_aborted == 3)
    assert stats.active_streams == 0


async def test_caller_deadline_bounds_the_session(stub: Any, emulator: RunningEmulator) -> None:
    # The deadline also covers opening the session and starting the turn upstream (over 0.5 s
    # on a loaded machine): 3 s, against a turn of 100 x 100 ms.
    conversation, _ = await start(stub, "chat", timeout=3)
    await conversation.send(turn("t1", {"text": "a " * 100, "delay_ms": 100}))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await conversation.until(lambda m: False)
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    await _eventually(lambda: emulator.stats("chat").streams_aborted == 1)
    # The session is still closed upstream, in the background.
    await _eventually(lambda: emulator.sessions("chat").counters.closed == 1)


async def test_shutdown_closes_the_sessions_it_cancels(emulator: RunningEmulator) -> None:
    server = start_sagewire(
        emulator.url, routes={"chat": ROUTES["chat"]}, server={"shutdown_grace_s": 0.2}
    )
    async with server as sw:
        for _ in range(2):
            await start(sw.inference, "chat")
        assert len(emulator.sessions("chat").live_ids()) == 2
    # The grace period ran out with both sessions idle: they were cancelled, and their
    # SageMaker sessions closed before the AWS client went away.
    assert emulator.sessions("chat").counters.closed == 2
    assert emulator.sessions("chat").live_ids() == []


# -- protocol errors ------------------------------------------------------------------------


async def _opening_error(stub: Any, first: converse_pb2.ConverseRequest) -> Any:
    call = stub.Converse(timeout=10)
    await call.write(first)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    return failure(caught.value)


@pytest.mark.parametrize(
    ("first", "code", "reason", "field_name"),
    [
        (turn("t1", {"text": "x"}), "INVALID_ARGUMENT", "INVALID_ARGUMENT", "open"),
        (open_("nope"), "NOT_FOUND", "UNKNOWN_MODEL", None),
        (open_("async-only"), "FAILED_PRECONDITION", "WRONG_MODE", None),
        (
            open_("chat", options=common_pb2.InvocationOptions(session_id="abc")),
            "INVALID_ARGUMENT",
            "OPTION_NOT_ALLOWED",
            "options.session_id",
        ),
        (
            open_("echo", options=common_pb2.InvocationOptions(session_id="NEW_SESSION")),
            "INVALID_ARGUMENT",
            "INVALID_ARGUMENT",
            "options.session_id",
        ),
        (
            open_("echo", framing=common_pb2.FRAMING_LINES),
            "INVALID_ARGUMENT",
            "OPTION_NOT_ALLOWED",
            "framing",
        ),
    ],
    ids=["turn-first", "unknown-model", "wrong-mode", "option", "new-session", "framing"],
)
async def test_a_bad_opening_ends_the_stream_with_a_status(
    stub: Any, first: Any, code: str, reason: str, field_name: str | None
) -> None:
    f = await _opening_error(stub, first)
    assert (f.code.name, f.reason) == (code, reason)
    if field_name is not None:
        assert f.detail(error_details_pb2.BadRequest).field_violations[0].field == field_name


async def test_bad_turns_are_refused_in_band(stub: Any) -> None:
    conversation, _ = await start(stub, "echo")
    await conversation.send(
        turn("t1", {"a": 1}),
        turn("t1", {"a": 2}),
        turn("", {"a": 3}),
        turn("empty"),
        turn("nan", {"x": float("nan")}),
        turn("part", body=b"x", partial=True),
        cancel("ghost"),
    )
    await conversation.call.done_writing()
    got = []
    while (message := await conversation.read()) is not None:
        got.append(message)
    errors = {
        m.turn_error.turn_id: m.turn_error.status.message for m in got if m.HasField("turn_error")
    }
    assert set(errors) == {"t1", "", "empty", "nan", "part", "ghost"}
    assert "already used" in errors["t1"]
    assert errors[""].startswith("turn_id:")
    assert errors["empty"].startswith("payload:")
    assert errors["nan"].startswith("json:")
    assert errors["part"].startswith("partial:")
    assert "no turn 'ghost'" in errors["ghost"]
    assert len([m for m in got if m.HasField("turn_end")]) == 1  # the first t1


async def test_a_second_open_ends_the_stream(stub: Any) -> None:
    conversation, _ = await start(stub, "echo")
    await conversation.send(open_("echo"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await conversation.until(lambda m: False)
    f = failure(caught.value)
    assert f.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "already open" in f.message


async def test_many_turns_in_one_session_json_records(stub: Any) -> None:
    conversation, _ = await start(stub, "chat")
    # Two batches of ten: twenty at once would outrun converse.max_queued_turns (16) whenever
    # the first turns take longer than sending the rest (a connection to open, a busy machine).
    got: list[Response] = []
    for first in (1, 11):
        for n in range(first, first + 10):
            await conversation.send(turn(f"t{n}", {"text": f"n{n}"}))
        if first == 1:
            got += await conversation.turn_done("t10")
    got += await conversation.finish()
    assert records(got, "t20")[0] == {"turn": 20.0, "previous": "n19"}
    assert len([m for m in got if m.HasField("turn_end")]) == 20
