"""Demo models, by name (``BUILTIN_MODELS``); the interface they implement is in ``model_api``.

Why: the emulator should let the gateway be exercised end to end without AWS or a real model.
A model is anything with ``async def invoke(request) -> ModelReply``; the reply carries the
response metadata (content type, custom attributes, session headers) and an async iterator of
body chunks. Real-time calls join the chunks; response streams send each chunk as one
``PayloadPart``. So one model serves both paths, and a model may be slow, stateful or proxy a
real container (see ``container.py``) without the HTTP layer knowing.

A model signals "the container answered with an error" by raising ``ModelFailure``: before the
first chunk it becomes ModelError 424, after it a ``ModelStreamError`` event.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from dataclasses import dataclass

from sagewire.emulator import sessions
from sagewire.emulator.bidi_models import BidiEchoModel
from sagewire.emulator.model_api import (
    DEFAULT_CONTENT_TYPE,
    Model,
    ModelFailure,
    ModelReply,
    ModelRequest,
)
from sagewire.emulator.slow_echo import SlowEchoModel
from sagewire.emulator.sse_tokens import SseTokensModel


async def _once(*chunks: bytes) -> AsyncGenerator[bytes, None]:
    for chunk in chunks:
        yield chunk


class EchoModel:
    """Returns the request body, content type and custom attributes unchanged.

    On the response stream the body goes out in parts of at most ``part_size`` bytes.
    """

    def __init__(self, part_size: int = 4096) -> None:
        self.part_size = part_size

    async def invoke(self, request: ModelRequest) -> ModelReply:
        body, size = request.body, self.part_size
        parts = [body[i : i + size] for i in range(0, len(body), size)]
        return ModelReply(
            chunks=_once(*parts),
            content_type=request.content_type or DEFAULT_CONTENT_TYPE,
            custom_attributes=request.custom_attributes,
        )


class Rechunker:
    """Cuts a byte stream into parts whose sizes cycle through ``sizes``.

    Why: real PayloadPart boundaries are arbitrary, so the demo LLM deliberately splits lines
    across parts and packs several lines into one, making clients prove they re-frame.
    """

    def __init__(self, sizes: Iterable[int]) -> None:
        sizes = tuple(sizes)
        if not sizes or min(sizes) < 1:
            raise ValueError("part sizes must be positive")
        self._sizes = itertools.cycle(sizes)
        self._next = next(self._sizes)
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return every part that is now complete."""
        self._buffer += data
        parts: list[bytes] = []
        while len(self._buffer) >= self._next:
            parts.append(bytes(self._buffer[: self._next]))
            del self._buffer[: self._next]
            self._next = next(self._sizes)
        return parts

    def flush(self) -> bytes:
        """Whatever is buffered (possibly empty), as one short part."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        if rest:
            self._next = next(self._sizes)
        return rest


TOKENS_CONTENT_TYPE = "application/jsonlines"
TOKENS_PART_SIZES = (7, 40, 3, 64)


class TokensModel:
    """A streaming LLM stand-in.

    Request ``{"text": "...", "delay_ms": 0}``; answers one JSON line per whitespace-separated
    word, ``{"token": w, "index": i}``, then ``{"done": true, "count": n}``, re-chunked with
    ``TOKENS_PART_SIZES``. ``delay_ms`` sleeps between words (the first goes out at once);
    buffered bytes are flushed before each sleep so nothing waits on the next word.
    Malformed requests fail as the container would: status 400 (ModelError 424 on the wire).
    """

    def __init__(self, part_sizes: Iterable[int] = TOKENS_PART_SIZES) -> None:
        self.part_sizes = tuple(part_sizes)

    async def invoke(self, request: ModelRequest) -> ModelReply:
        words, delay = self._parse(request.body)
        return ModelReply(chunks=self._generate(words, delay), content_type=TOKENS_CONTENT_TYPE)

    @staticmethod
    def _parse(body: bytes) -> tuple[list[str], float]:
        try:
            doc = json.loads(body)
        except ValueError as exc:
            raise ModelFailure(400, f"request body is not JSON: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("text"), str):
            raise ModelFailure(400, 'request must be a JSON object with a string "text"')
        delay_ms = doc.get("delay_ms", 0)
        if not isinstance(delay_ms, int) or isinstance(delay_ms, bool) or delay_ms < 0:
            raise ModelFailure(400, '"delay_ms" must be a non-negative integer')
        return doc["text"].split(), delay_ms / 1000

    async def _generate(self, words: list[str], delay: float) -> AsyncGenerator[bytes, None]:
        rechunker = Rechunker(self.part_sizes)
        for index, word in enumerate(words):
            if index and delay:
                if rest := rechunker.flush():
                    yield rest
                await asyncio.sleep(delay)
            for part in rechunker.feed(_line({"token": word, "index": index})):
                yield part
        for part in rechunker.feed(_line({"done": True, "count": len(words)})):
            yield part
        if rest := rechunker.flush():
            yield rest


class FirehoseModel:
    """Volume on demand, for back-pressure tests and benchmarks.

    Request ``{"bytes": N, "part_size": K, "delay_ms": 0}``: answers N bytes in parts of K
    bytes (default 16 KiB), each part a line of ``x`` ending in a newline. It produces only as
    fast as the client reads, so a stalled reader shows up as a stalled ``stream_parts_sent``.
    """

    MAX_BYTES = 4 * 1024**3
    MAX_PART = 1024 * 1024

    async def invoke(self, request: ModelRequest) -> ModelReply:
        try:
            doc = json.loads(request.body)
            total = int(doc.get("bytes", 0))
            part_size = int(doc.get("part_size", 16384))
            delay = int(doc.get("delay_ms", 0)) / 1000
        except (ValueError, TypeError, AttributeError):
            raise ModelFailure(
                400, 'request must be JSON {"bytes": N, "part_size": K, "delay_ms": D}'
            ) from None
        if not 0 <= total <= self.MAX_BYTES or not 1 <= part_size <= self.MAX_PART or delay < 0:
            raise ModelFailure(
                400, f"bytes must be 0..{self.MAX_BYTES}, part_size 1..{self.MAX_PART}"
            )
        return ModelReply(chunks=self._generate(total, part_size, delay), content_type="text/plain")

    @staticmethod
    async def _generate(total: int, part_size: int, delay: float) -> AsyncGenerator[bytes, None]:
        part = b"x" * (part_size - 1) + b"\n"
        sent = 0
        while sent < total:
            if delay and sent:
                await asyncio.sleep(delay)
            chunk = part if total - sent >= part_size else part[-(total - sent) :]
            sent += len(chunk)
            yield chunk


@dataclass
class _Conversation:
    turns: int = 0
    last_text: str | None = None


class ChatModel:
    """A stateful chat stand-in that makes SageMaker session stickiness visible.

    ``{"requestType": "NEW_SESSION"}`` sent with SessionId ``NEW_SESSION`` opens a session
    (answered with ``X-Amzn-SageMaker-New-Session-Id: <id>; Expires=<time>``);
    ``{"requestType": "CLOSE"}`` sent with the session's id closes it. A turn is
    ``{"text": "...", "delay_ms": 0}``: the answer is JSON lines, ``{"turn": n, "previous":
    <the session's previous turn text or null>}``, one ``{"token": w, "index": i}`` per word,
    then ``{"done": true, "turn": n}``, re-chunked like ``tokens``. A turn sent with
    ``NEW_SESSION`` opens a session and is its turn 1; without a session every turn is turn 1.
    The model holds each session's memory; the emulator's router rejects unknown or expired ids
    before a call gets here (see ``sessions.py``).
    """

    MAX_SESSIONS = 100_000

    def __init__(self, ttl_s: float = sessions.DEFAULT_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._conversations: dict[str, _Conversation] = {}

    async def invoke(self, request: ModelRequest) -> ModelReply:
        doc = _json_object(request.body)
        session_id = request.session_id
        kind = doc.get("requestType")
        if kind == "NEW_SESSION":
            if session_id != sessions.NEW_SESSION:
                raise ModelFailure(400, "open a session with SessionId NEW_SESSION")
            return ModelReply(
                _once(_line({"opened": True})), TOKENS_CONTENT_TYPE, new_session_id=self._open()
            )
        if kind == "CLOSE":
            conversation = self._conversations.pop(session_id or "", None)
            if conversation is None:
                raise ModelFailure(400, "CLOSE needs the SessionId of an open session")
            body = _line({"closed": True, "turns": conversation.turns})
            return ModelReply(_once(body), TOKENS_CONTENT_TYPE, closed_session_id=session_id)
        if kind is not None:
            raise ModelFailure(400, f"unknown requestType {kind!r}; use NEW_SESSION or CLOSE")
        text, delay = _chat_turn(doc)
        header: str | None = None
        if session_id == sessions.NEW_SESSION:
            header = self._open()
            session_id = sessions.parse_new_session(header)[0]
        conversation = _Conversation()
        if session_id:
            found = self._conversations.get(session_id)
            if found is None:
                raise ModelFailure(400, f"this model holds no session {session_id}")
            conversation = found
        conversation.turns += 1
        previous, conversation.last_text = conversation.last_text, text
        lines = [_line({"turn": conversation.turns, "previous": previous})]
        lines += [_line({"token": w, "index": i}) for i, w in enumerate(text.split())]
        lines.append(_line({"done": True, "turn": conversation.turns}))
        return ModelReply(
            chunks=_paced(lines, delay), content_type=TOKENS_CONTENT_TYPE, new_session_id=header
        )

    def _open(self) -> str:
        if len(self._conversations) >= self.MAX_SESSIONS:  # oldest first: dicts keep order
            del self._conversations[next(iter(self._conversations))]
        session_id, header = sessions.new_session_header(self.ttl_s)
        self._conversations[session_id] = _Conversation()
        return header


def _json_object(body: bytes) -> dict[str, object]:
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise ModelFailure(400, f"request body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ModelFailure(400, "request must be a JSON object")
    return doc


def _chat_turn(doc: dict[str, object]) -> tuple[str, float]:
    text, delay_ms = doc.get("text"), doc.get("delay_ms", 0)
    if not isinstance(text, str):
        raise ModelFailure(400, 'a turn must be a JSON object with a string "text"')
    if not isinstance(delay_ms, int) or isinstance(delay_ms, bool) or delay_ms < 0:
        raise ModelFailure(400, '"delay_ms" must be a non-negative integer')
    return text, delay_ms / 1000


async def _paced(lines: list[bytes], delay: float) -> AsyncGenerator[bytes, None]:
    """Lines re-chunked like ``tokens``, sleeping ``delay`` before each line after the first."""
    rechunker = Rechunker(TOKENS_PART_SIZES)
    for index, line in enumerate(lines):
        if index and delay:
            if rest := rechunker.flush():
                yield rest
            await asyncio.sleep(delay)
        for part in rechunker.feed(line):
            yield part
    if rest := rechunker.flush():
        yield rest


def _line(doc: Mapping[str, object]) -> bytes:
    return json.dumps(doc).encode() + b"\n"


BUILTIN_MODELS: Mapping[str, Callable[[], Model]] = {
    "echo": EchoModel,
    "tokens": TokensModel,
    "firehose": FirehoseModel,
    "chat": ChatModel,
    "bidi-echo": BidiEchoModel,
    "slow-echo": SlowEchoModel,
    "sse-tokens": SseTokensModel,
}
"""Demo models selectable by ``model = "<name>"`` in the emulator config."""
