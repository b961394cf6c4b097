"""A Converse session as the client sees it: send a turn, iterate its answer.

One gRPC bidirectional call carries the session. A reader task takes every server message and
hands it to the turn it names (turn ids are chosen here: t1, t2, … unless given), so several
turns may run at once where the route allows. A turn's chunks are held until its iterator reads
them: read each turn you send. A failed turn raises its own error from its iterator and the
session goes on; a failure of the session ends every unfinished turn with that error.

Requests reach grpc.aio through a request iterator (a bounded queue, so a sender still waits
when the stream cannot take more), not `call.write()`. The status a user sees is the server's,
even when a send races the server ending the call: grpc.aio then sets a local INTERNAL
"Internal error from Core" on the call, before or after the server's status arrives
(docs/errors.md). sagewire.client.call_status recovers the server's: it keeps the first status
the call was given and, when that was the local one, waits briefly for the server's to replace
it; only when neither shows does the user get that INTERNAL, with a message saying what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json as jsonlib
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any

import grpc

from sagewire.client import errors
from sagewire.client.call_status import CallStatus
from sagewire.client.results import Chunk, TurnEnd
from sagewire.v1 import common_pb2, converse_pb2, inference_service_pb2_grpc

Metadata = Callable[[], Awaitable[tuple[tuple[str, str], ...]]]
_Item = Chunk | TurnEnd | errors.SagewireError
# Requests queued for the stream: a sender waits beyond this many (the stream's flow control).
_OUTBOX = 16
# The error when grpc.aio's local INTERNAL is all the call ever reports.
_LOCAL_ONLY = (
    "the Converse session ended while this client was sending to it, and grpc.aio reported its "
    "own INTERNAL in place of the server's status (docs/errors.md); open a new session"
)


class Turn:
    """One turn's answer: `async for chunk in turn`; `turn.end` is set once it finished."""

    def __init__(self, session: ConverseSession, turn_id: str) -> None:
        self.turn_id = turn_id
        self.end: TurnEnd | None = None
        self._session = session
        self._items: asyncio.Queue[_Item] = asyncio.Queue()
        self.finished = False

    def _put(self, item: _Item) -> None:
        if not self.finished:
            self.finished = not isinstance(item, Chunk)
            self._items.put_nowait(item)

    def __aiter__(self) -> AsyncIterator[Chunk]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[Chunk]:
        while True:
            item = await self._items.get()
            if isinstance(item, errors.SagewireError):
                raise item
            if isinstance(item, TurnEnd):
                self.end = item
                return
            yield item

    async def text(self) -> str:
        """The whole answer as text (reads every chunk)."""
        return "".join([chunk.text async for chunk in self])

    async def cancel(self) -> None:
        """Stops the turn; its iterator then raises `Cancelled`."""
        await self._session.cancel(self.turn_id)


class ConverseSession:
    """A Converse session on one model. Made by `AsyncClient.converse`; use `async with`."""

    def __init__(
        self,
        stub: inference_service_pb2_grpc.InferenceServiceStub,
        model: str,
        *,
        content_type: str,
        accept: str,
        framing: common_pb2.Framing.ValueType,
        options: common_pb2.InvocationOptions,
        timeout: float | None,
        metadata: Metadata,
    ) -> None:
        self.model = model
        self.session_id = ""
        self._stub = stub
        self._open = converse_pb2.ConverseOpen(
            model=model,
            options=options,
            content_type=content_type,
            accept=accept,
            framing=framing,
            view=common_pb2.RESPONSE_VIEW_BODY,  # chunks are parsed from `body` here
        )
        self._timeout = timeout
        self._metadata = metadata
        self._call: Any = None
        self._turns: dict[str, Turn] = {}
        self._ids = itertools.count(1)
        self._reader: asyncio.Task[None] | None = None
        self._failure: errors.SagewireError | None = None
        self._outbox: asyncio.Queue[converse_pb2.ConverseRequest | None] = asyncio.Queue(_OUTBOX)
        self._status: CallStatus | None = None
        self._closing = False

    async def __aenter__(self) -> ConverseSession:
        await self.open()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            await self.close()
        else:
            self.abort()

    async def open(self) -> None:
        """Opens the session; raises the error of a refused open (unknown model, …)."""
        self._call = self._stub.Converse(
            self._requests(),  # type: ignore[arg-type]  # grpc-stubs types the blocking API
            timeout=self._timeout,
            metadata=await self._metadata(),
        )
        self._status = CallStatus(self._call)
        self._outbox.put_nowait(converse_pb2.ConverseRequest(open=self._open))
        try:
            first = await self._call.read()
        except grpc.RpcError as exc:
            raise await self._server_error(exc) from None
        if first is grpc.aio.EOF:  # type: ignore[attr-defined]
            raise await self._ended()
        self.session_id = first.opened.session_id
        self._reader = asyncio.create_task(self._read(), name=f"converse-{self.model}")

    async def send(
        self,
        payload: str | bytes | Any,
        *,
        turn_id: str | None = None,
        content_type: str = "",
        partial: bool = False,
    ) -> Turn:
        """Sends one turn: text (str), raw bytes, or any other value as exact JSON. Returns the
        turn, an async iterator of its answer's chunks."""
        if self._failure is not None:
            raise self._failure
        turn = Turn(self, turn_id or f"t{next(self._ids)}")
        message = converse_pb2.ConverseTurn(
            turn_id=turn.turn_id, content_type=content_type, partial=partial
        )
        if isinstance(payload, str):
            message.text = payload
        elif isinstance(payload, bytes):
            message.body = payload
        else:
            message.body = jsonlib.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
            message.content_type = content_type or "application/json"
        self._turns[turn.turn_id] = turn
        try:
            await self._write(converse_pb2.ConverseRequest(turn=message))
        except BaseException:
            del self._turns[turn.turn_id]  # never sent: nothing to cancel or wait for
            raise
        return turn

    async def cancel(self, turn_id: str | None = None) -> None:
        """Cancels one turn, or every unfinished turn when no id is given."""
        ids = [turn_id] if turn_id else [t.turn_id for t in self._turns.values() if not t.finished]
        for each in ids:
            await self._write(
                converse_pb2.ConverseRequest(cancel=converse_pb2.ConverseCancel(turn_id=each))
            )

    async def close(self) -> None:
        """Ends the session after its running turns finish (a half-close)."""
        if self._call is None or self._reader is None:
            return
        self._closing = True  # before the end is queued: no turn may be queued behind it
        with contextlib.suppress(errors.SagewireError):  # the reader reports how it ended
            await self._write(None)  # the request iterator ends: grpc.aio half-closes
        await asyncio.shield(self._reader)
        if self._failure is not None and not isinstance(self._failure, errors.Cancelled):
            raise self._failure

    def abort(self) -> None:
        """Cancels the whole call at once (the model's stream with it)."""
        if self._call is not None:
            self._call.cancel()

    async def _requests(self) -> AsyncIterator[converse_pb2.ConverseRequest]:
        while (request := await self._outbox.get()) is not None:
            yield request

    async def _write(self, request: converse_pb2.ConverseRequest | None) -> None:
        """Queue a request for the stream (None: the last); raises how the session ended when
        it did, before or while waiting for room."""
        if self._failure is not None:
            raise self._failure
        if self._closing and request is not None:
            raise errors.SagewireError(
                grpc.StatusCode.FAILED_PRECONDITION, "the Converse session is closing"
            )
        if not self._outbox.full():
            self._outbox.put_nowait(request)
            return
        put = asyncio.ensure_future(self._outbox.put(request))
        try:
            if self._reader is not None and not put.done():
                await asyncio.wait({put, self._reader}, return_when=asyncio.FIRST_COMPLETED)
            else:
                await put
        finally:
            if not put.done():
                put.cancel()
        if not put.done() or put.cancelled():
            raise self._failure or errors.SagewireError(
                grpc.StatusCode.FAILED_PRECONDITION, "the Converse session has ended"
            )

    async def _read(self) -> None:
        try:
            while (message := await self._call.read()) is not grpc.aio.EOF:  # type: ignore[attr-defined]
                self._dispatch(message)
            failure = await self._ended()
        except grpc.RpcError as exc:
            failure = await self._server_error(exc)
        self._failure = failure
        for turn in self._turns.values():
            turn._put(failure)

    def _dispatch(self, message: converse_pb2.ConverseResponse) -> None:
        kind = message.WhichOneof("kind")
        if kind == "chunk":
            part = message.chunk
            view = part.json if part.HasField("json") else None
            self._turn(part.turn_id)._put(Chunk(part.turn_id, part.body, part.partial, view))
        elif kind == "turn_end":
            end = message.turn_end
            self._turn(end.turn_id)._put(
                TurnEnd(
                    end.turn_id,
                    end.invoked_production_variant,
                    end.chunk_count,
                    end.byte_count,
                    end.endpoint_name,
                )
            )
        elif kind == "turn_error":
            error = message.turn_error
            self._turn(error.turn_id)._put(errors.from_status(error.status))
        elif kind == "session":
            self.session_id = message.session.session_id

    def _turn(self, turn_id: str) -> Turn:
        return self._turns.get(turn_id) or self._turns.setdefault(turn_id, Turn(self, turn_id))

    async def _ended(self) -> errors.SagewireError:
        """The error that ends every unfinished turn once the call is over."""
        code = await self._call.code()
        if code != grpc.StatusCode.OK:
            assert self._status is not None
            return await self._server_error(await self._status.now())
        return errors.Cancelled(grpc.StatusCode.CANCELLED, "the Converse session was closed")

    async def _server_error(self, exc: grpc.RpcError) -> errors.SagewireError:
        """The server's status for a failed call, not grpc.aio's local send failure."""
        assert self._status is not None
        return await self._status.server_error(exc, _LOCAL_ONLY)
