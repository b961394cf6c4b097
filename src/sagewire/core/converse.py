"""Converse: a session of turns over one bidirectional stream (protocol in docs/converse.md).

Transport-neutral. A transport hands over how the session opens (`ConverseStart`) and the
client's later messages as an async iterator; `ConverseSession.run(send)` awaits `send` for
every event, in order, and returns when the session ends normally or raises the
SagewireError that ends it. Per-turn failures never end the session: they travel as
`TurnFailed` events.

Inside: a reader task takes client messages; turns wait in a FIFO queue and start in order
while fewer than `max_concurrent_turns` run (one task each, calling `Gateway.invoke` on
realtime routes and `Gateway.open_stream` on stream routes); every event goes through one
outbox that `run` drains into `send`. Chunks need a credit from a semaphore of
`max_buffered_chunks` that is given back once the chunk is sent, so a client that stops
reading stops the turns reading from SageMaker instead of growing memory.

With SageMaker stateful sessions on (`converse.sessions`), every turn carries the session id
(`converse_sessions.StatefulSession`). Which turns are admitted and how a whole answer becomes
chunks are in `converse_turns`.

On `bidi` routes the session holds one SageMaker HTTP/2 bidirectional stream instead: the
reader sends each turn upstream as a part when it arrives, and a receiver task relays the
model's parts as chunks (`converse_bidi.BidiTurns`, which also documents how output is tagged
with turns). A half-close or `close` closes the stream's input and the session ends with OK once
the model has ended its output; the model ending first also ends it with OK; an upstream
failure ends it with that failure's status; a cancelled caller leaves the stream's block, which
closes it upstream at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from sagewire.config.settings import RouteMode
from sagewire.core.converse_bidi import BidiTurns
from sagewire.core.converse_events import (
    BadTurn,
    CancelTurn,
    ClientMessage,
    CloseSession,
    ConverseEvent,
    ConverseStart,
    Outbox,
    Send,
    SessionOpened,
    Turn,
    TurnChunk,
    TurnEnded,
    TurnFailed,
)
from sagewire.core.converse_sessions import SESSION_NOT_OPENED, StatefulSession
from sagewire.core.converse_turns import (
    Admission,
    admission_error,
    cancelled,
    check_session_option,
    not_cancellable,
    result_chunks,
    session_idle,
    session_too_long,
    unknown_turn,
)
from sagewire.core.errors import SESSION_REJECTED, SagewireError
from sagewire.core.gateway import Gateway
from sagewire.core.types import InvokeCall, InvokeResult
from sagewire.core.validation import NEW_SESSION

log = logging.getLogger(__name__)

# Session errors that end the Converse: every later turn would fail the same way.
_SESSION_FATAL = frozenset({SESSION_REJECTED, SESSION_NOT_OPENED})


def _internal_error(what: str) -> SagewireError:
    """Log the exception being handled under a new incident id; the error names only the id."""
    incident = uuid.uuid4().hex[:12]
    log.exception("%s, incident %s", what, incident)
    return SagewireError(message=f"internal error in sagewire (incident {incident})")


@dataclass(eq=False)
class _Running:
    task: asyncio.Task[None]
    cancelled: bool = False  # by the client, as opposed to the session ending


class ConverseSession:
    """One Converse. Construct (raises what is wrong with the opening), then `await run(send)`."""

    def __init__(
        self, gateway: Gateway, start: ConverseStart, messages: AsyncIterator[ClientMessage]
    ) -> None:
        self._gateway = gateway
        self._start = start
        self._messages = messages
        now = time.monotonic()
        self._deadline = None if start.time_remaining_s is None else now + start.time_remaining_s
        self._route, self._framing = gateway.check_session(self._call(b""))
        self._settings = self._route.settings.converse
        self._is_bidi = self._route.mode is RouteMode.BIDI
        self._bidi: BidiTurns | None = None  # the open stream, on bidi routes
        self._receiver: asyncio.Task[None] | None = None
        check_session_option(self._name, self._settings, start.options.session_id)
        # (event, holds a credit); drained by run() only.
        self._outbox: Outbox = asyncio.Queue()
        self._session = StatefulSession(
            gateway, self._route.name, self._settings, self._session_call, self._outbox
        )
        self._credits = asyncio.Semaphore(self._settings.max_buffered_chunks)
        self._waiting: deque[Turn] = deque()
        self._running: dict[str, _Running] = {}
        self._seen: set[str] = set()
        self._closing = False
        self._failure: SagewireError | None = None
        self._last_activity = now
        self._reader: asyncio.Task[None] | None = None

    @property
    def _name(self) -> str:
        return self._route.name

    def _session_call(self, body: bytes, content_type: str, bounded: bool) -> InvokeCall:
        return self._call(body, content_type, bounded=bounded)

    def _call(self, body: bytes, content_type: str = "", *, bounded: bool = True) -> InvokeCall:
        start = self._start
        remaining = None
        if bounded and self._deadline is not None:
            remaining = self._deadline - time.monotonic()
        return InvokeCall(
            model=start.model,
            body=body,
            content_type=content_type or start.content_type,
            accept=start.accept,
            options=start.options,
            time_remaining_s=remaining,
            framing=start.framing,
        )

    # -- the session ------------------------------------------------------------------------

    async def run(self, send: Send) -> None:
        limit = asyncio.timeout(self._settings.max_duration_s)
        try:
            async with limit:
                if self._is_bidi:
                    await self._run_bidi(send)
                else:
                    if self._settings.sessions and self._settings.open_body:
                        await self._session.open()
                    session = self._session
                    await send(SessionOpened(self._name, session.session_id, session.expires_at))
                    self._touch()
                    self._reader = asyncio.create_task(self._read())
                    await self._pump(send)
        except asyncio.CancelledError:
            # The caller went away or its deadline passed: stop everything, close upstream
            # in the background since this task may not wait any more.
            self._stop()
            self._session.close_later()
            raise
        except TimeoutError:
            await self._wind_down()
            if not limit.expired():
                raise
            raise session_too_long(self._name, self._settings.max_duration_s) from None
        except BaseException:
            await self._wind_down()
            raise
        await self._wind_down()

    async def _run_bidi(self, send: Send) -> None:
        """The session over one bidirectional stream, held open for the whole session."""
        async with self._gateway.open_bidi(self._call(b"")) as stream:
            bidi = self._bidi = BidiTurns(stream, self._outbox, self._credits, self._touch)
            # Reading starts before the response headers: parts the client sent meanwhile go
            # upstream at once, in case a model answers its headers only once input arrives.
            self._reader = asyncio.create_task(self._read())
            try:
                await bidi.start()
                await send(SessionOpened(self._name))
                self._touch()
                self._receiver = asyncio.create_task(self._receive())
                await self._pump(send)
            finally:
                await self._halt()  # before the stream closes, nothing may still use it
            if not bidi.input_closed:  # the model ended first: end our side too (bounded)
                try:
                    await bidi.close_input()
                except SagewireError as error:
                    log.debug("closing the input of a finished bidi stream: %s", error)

    async def _receive(self) -> None:
        assert self._bidi is not None
        try:
            await self._bidi.relay_output()
        except SagewireError as error:
            self._fail(error)
        except Exception:
            self._fail(_internal_error("relaying a bidi stream failed"))

    def _touch(self) -> None:
        self._last_activity = time.monotonic()

    def _finished(self) -> bool:
        if self._bidi is not None:  # the model ended its output and all of it was sent
            return self._bidi.output_done and self._outbox.empty()
        return self._idle() and self._closing

    async def _pump(self, send: Send) -> None:
        idle_timeout = self._settings.idle_timeout_s
        while True:
            if self._failure is not None:
                raise self._failure
            if self._finished():
                return
            idle = self._idle()
            try:
                if idle:
                    left = idle_timeout - (time.monotonic() - self._last_activity)
                    async with asyncio.timeout(max(left, 0.0)):
                        event, credited = await self._outbox.get()
                else:
                    event, credited = await self._outbox.get()
            except TimeoutError:
                if self._idle() and time.monotonic() - self._last_activity >= idle_timeout:
                    raise session_idle(self._name, idle_timeout, self._is_bidi) from None
                continue
            if event is None:
                continue
            await send(event)
            if credited:
                self._credits.release()
            if isinstance(event, TurnEnded | TurnFailed):
                self._last_activity = time.monotonic()

    def _idle(self) -> bool:
        return not self._running and not self._waiting and self._outbox.empty()

    def _wake(self) -> None:
        self._outbox.put_nowait((None, False))

    def _fail(self, error: SagewireError) -> None:
        if self._failure is None:
            self._failure = error
        self._wake()

    def _stop(self) -> list[asyncio.Task[None]]:
        tasks = [running.task for running in self._running.values()]
        tasks += [task for task in (self._reader, self._receiver) if task is not None]
        for task in tasks:
            task.cancel()
        return tasks

    async def _halt(self) -> None:
        """Stop every task of the session and wait until they have stopped."""
        tasks = self._stop()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _wind_down(self) -> None:
        """Stop what still runs (nothing, after a normal end), then close the SageMaker
        session."""
        await self._halt()
        await self._session.close()

    # -- client messages --------------------------------------------------------------------

    async def _read(self) -> None:
        try:
            async for message in self._messages:
                self._touch()
                await self._accept(message)
            self._closing = True  # half-close
            if self._bidi is not None:
                await self._bidi.close_input()
        except SagewireError as error:
            if self._bidi is not None and self._bidi.output_done:
                return  # the model already ended the stream: nothing is lost
            self._fail(error)
            return
        except Exception:
            # A transport failure reading the client: end the session rather than hang on it.
            self._fail(_internal_error("reading a Converse stream failed"))
            return
        self._wake()

    async def _accept(self, message: ClientMessage) -> None:
        match message:
            case Turn():
                error = self._admission_error(message)
                if error is not None:
                    await self._refuse(message.turn_id, error)
                elif self._bidi is not None:
                    self._seen.add(message.turn_id)
                    await self._bidi.send(message)  # waits while the model takes no input
                else:
                    self._seen.add(message.turn_id)
                    self._waiting.append(message)
                    self._dispatch()
            case BadTurn(turn_id, error):
                await self._refuse(turn_id, error)
            case CancelTurn(turn_id) if self._is_bidi:
                await self._refuse(turn_id, not_cancellable(self._name, turn_id))
            case CancelTurn(turn_id):
                await self._cancel(turn_id)
            case CloseSession():
                self._closing = True
                if self._bidi is not None:
                    await self._bidi.close_input()
                self._wake()

    def _admission_error(self, turn: Turn) -> SagewireError | None:
        state = Admission(
            settings=self._settings,
            is_bidi=self._is_bidi,
            closing=self._closing,
            bidi=self._bidi,
            seen=self._seen,
            running=len(self._running),
            waiting=len(self._waiting),
        )
        return admission_error(turn, state)

    async def _refuse(self, turn_id: str, error: SagewireError) -> None:
        # Refusals answer the client's own messages: they take a credit, so a client that
        # floods without reading is paused like a slow reader.
        await self._credits.acquire()
        self._outbox.put_nowait((TurnFailed(turn_id, error), True))

    async def _cancel(self, turn_id: str) -> None:
        running = self._running.get(turn_id)
        if running is not None:
            running.cancelled = True
            running.task.cancel()
            return
        for turn in self._waiting:
            if turn.turn_id == turn_id:
                self._waiting.remove(turn)
                self._outbox.put_nowait((TurnFailed(turn_id, cancelled(turn_id)), False))
                return
        if turn_id not in self._seen:
            await self._refuse(turn_id, unknown_turn(turn_id))
        # A finished turn: nothing left to cancel.

    # -- turns ------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        """Start waiting turns in arrival order while slots are free."""
        limit = self._settings.max_concurrent_turns
        while self._waiting and len(self._running) < limit and self._failure is None:
            turn = self._waiting.popleft()
            running = _Running(asyncio.create_task(self._run_turn(turn)))
            self._running[turn.turn_id] = running

    async def _run_turn(self, turn: Turn) -> None:
        event: ConverseEvent | None = None
        try:
            event = await self._execute(turn)
        except asyncio.CancelledError:
            running = self._running.get(turn.turn_id)
            if running is None or not running.cancelled:
                raise  # the session is ending
            event = TurnFailed(turn.turn_id, cancelled(turn.turn_id))
        except SagewireError as error:
            if error.reason in _SESSION_FATAL and self._settings.sessions:
                self._fail(replace(error, metadata={**error.metadata, "turn_id": turn.turn_id}))
            else:
                event = TurnFailed(turn.turn_id, error)
        except Exception:
            event = TurnFailed(turn.turn_id, _internal_error("Converse turn failed unexpectedly"))
        finally:
            self._running.pop(turn.turn_id, None)
        if event is not None:
            self._outbox.put_nowait((event, False))
        self._dispatch()

    async def _execute(self, turn: Turn) -> TurnEnded:
        retried = False
        while True:
            session_id = await self._session.for_turn()
            try:
                if session_id == NEW_SESSION:
                    result = await self._session.open_with_turn(
                        turn.turn_id, turn.body, turn.content_type
                    )
                    return await self._relay_result(turn.turn_id, result)
                return await self._call_model(turn, session_id)
            except SagewireError as error:
                if error.reason != SESSION_REJECTED or retried:
                    raise
                if not (self._settings.sessions and self._settings.reopen_expired):
                    raise
                retried = True
                await self._session.reopen(session_id)

    async def _call_model(self, turn: Turn, session_id: str) -> TurnEnded:
        call = self._call(turn.body, turn.content_type)
        if self._route.mode is RouteMode.REALTIME:
            result = await self._gateway.invoke(call, session_id=session_id)
            return await self._relay_result(turn.turn_id, result)
        count = size = 0
        async with self._gateway.open_stream(call, session_id=session_id) as stream:
            record = stream.framing.records
            async for piece in stream.pieces:
                await self._emit(TurnChunk(turn.turn_id, piece, record))
                count, size = count + 1, size + len(piece)
        start = stream.start
        return TurnEnded(turn.turn_id, start.invoked_variant, count, size, start.endpoint)

    async def _relay_result(self, turn_id: str, result: InvokeResult) -> TurnEnded:
        """A whole answer as chunks: records under lines framing, else one chunk."""
        chunks = result_chunks(result, self._framing)
        for body, record in chunks:
            await self._emit(TurnChunk(turn_id, body, record))
        size = sum(len(b) for b, _ in chunks)
        return TurnEnded(turn_id, result.invoked_variant, len(chunks), size, result.endpoint)

    async def _emit(self, chunk: TurnChunk) -> None:
        await self._credits.acquire()
        self._outbox.put_nowait((chunk, True))
