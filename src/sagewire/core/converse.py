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

With SageMaker stateful sessions on (`converse.sessions`), every turn carries the session id:
either the route's open request gets it before the first turn, or the first turn itself is
sent with NEW_SESSION through InvokeEndpoint (InvokeEndpointWithResponseStream refuses
NEW_SESSION) while later turns wait for the id. When the Converse ends, the route's close
request closes the SageMaker session.

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
from datetime import UTC, datetime

from sagewire.config.settings import RouteMode, StreamFraming
from sagewire.core.content import is_json
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
    SessionChanged,
    SessionOpened,
    Turn,
    TurnChunk,
    TurnEnded,
    TurnFailed,
)
from sagewire.core.errors import (
    SESSION_REJECTED,
    ErrorKind,
    SagewireError,
    invalid_argument,
)
from sagewire.core.framing import LineFramer
from sagewire.core.gateway import Gateway
from sagewire.core.types import InvocationOptions, InvokeCall, InvokeResult
from sagewire.core.validation import NEW_SESSION, validate_options

log = logging.getLogger(__name__)

SESSION_NOT_OPENED = "SESSION_NOT_OPENED"
# Session errors that end the Converse: every later turn would fail the same way.
_SESSION_FATAL = frozenset({SESSION_REJECTED, SESSION_NOT_OPENED})
# Close requests still running after their Converse was cancelled (kept from the GC).
_closing: set[asyncio.Task[None]] = set()


async def finish_closing() -> None:
    """Wait for the close requests of sessions that were cancelled (each bounded by its route's
    close_timeout_s). Call after the server stopped and before the AWS client closes."""
    await asyncio.sleep(0)  # let just-cancelled sessions schedule theirs
    if _closing:
        await asyncio.gather(*_closing, return_exceptions=True)


# -- errors ---------------------------------------------------------------------------------


def _turn_error(turn_id: str, message: str, kind: ErrorKind, reason: str) -> SagewireError:
    return SagewireError(message=message, kind=kind, reason=reason, metadata={"turn_id": turn_id})


def _cancelled(turn_id: str) -> SagewireError:
    return _turn_error(
        turn_id, f"turn {turn_id!r} was cancelled", ErrorKind.CANCELLED, "TURN_CANCELLED"
    )


def parse_session_header(value: str) -> tuple[str, datetime | None]:
    """SageMaker's NewSessionId, `<id>; Expires=<ISO time>`, as (id, expiry or None)."""
    session_id, *attributes = (part.strip() for part in value.split(";"))
    for attribute in attributes:
        key, _, raw = attribute.partition("=")
        if key.strip().lower() == "expires":
            try:
                expires = datetime.fromisoformat(raw.strip())
            except ValueError:
                return session_id, None
            return session_id, expires if expires.tzinfo else expires.replace(tzinfo=UTC)
    return session_id, None


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
        self._check_session_option(start.options.session_id)
        self._session_id = ""
        self._expires_at: datetime | None = None
        self._session_lock = asyncio.Lock()
        self._reopen_pending = False
        # (event, holds a credit); drained by run() only.
        self._outbox: Outbox = asyncio.Queue()
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

    def _check_session_option(self, session_id: str) -> None:
        if self._settings.sessions and session_id:
            raise invalid_argument(
                "options.session_id",
                f"model {self._name!r} opens its own stateful session for each Converse; "
                "leave session_id empty",
            )
        if not self._settings.sessions and session_id == NEW_SESSION:
            raise invalid_argument(
                "options.session_id",
                f"model {self._name!r} has no Converse sessions (converse.sessions is off), so "
                f"{NEW_SESSION} cannot be used; pass an existing session id or none",
            )

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
                        await self._open_session()
                    await send(SessionOpened(self._name, self._session_id, self._expires_at))
                    self._touch()
                    self._reader = asyncio.create_task(self._read())
                    await self._pump(send)
        except asyncio.CancelledError:
            # The caller went away or its deadline passed: stop everything, close upstream
            # in the background since this task may not wait any more.
            self._stop()
            self._close_later()
            raise
        except TimeoutError:
            await self._wind_down()
            if not limit.expired():
                raise
            raise SagewireError(
                message=f"the Converse session on model {self._name!r} reached its maximum "
                f"duration of {self._settings.max_duration_s:g}s (converse.max_duration_s); "
                "open a new one",
                kind=ErrorKind.DEADLINE_EXCEEDED,
                reason="SESSION_MAX_DURATION",
            ) from None
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
            incident = uuid.uuid4().hex[:12]
            log.exception("relaying a bidi stream failed, incident %s", incident)
            self._fail(SagewireError(message=f"internal error in sagewire (incident {incident})"))

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
                    quiet = "no part from the model" if self._is_bidi else "no turn running"
                    raise SagewireError(
                        message=f"the Converse session on model {self._name!r} was idle for "
                        f"{idle_timeout:g}s (no message, {quiet}) and was ended "
                        "(converse.idle_timeout_s)",
                        kind=ErrorKind.DEADLINE_EXCEEDED,
                        reason="SESSION_IDLE_TIMEOUT",
                    ) from None
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
        await self._close_session()

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
            incident = uuid.uuid4().hex[:12]
            log.exception("reading a Converse stream failed, incident %s", incident)
            self._fail(SagewireError(message=f"internal error in sagewire (incident {incident})"))
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
                await self._refuse(turn_id, self._not_cancellable(turn_id))
            case CancelTurn(turn_id):
                await self._cancel(turn_id)
            case CloseSession():
                self._closing = True
                if self._bidi is not None:
                    await self._bidi.close_input()
                self._wake()

    def _not_cancellable(self, turn_id: str) -> SagewireError:
        return _turn_error(
            turn_id,
            f"turn {turn_id!r} cannot be cancelled: model {self._name!r} is a bidi route, "
            "whose parts reach the model as they arrive and whose stream has no per-turn "
            "cancel; cancel the call to stop the model",
            ErrorKind.FAILED_PRECONDITION,
            "TURN_NOT_CANCELLABLE",
        )

    def _admission_error(self, turn: Turn) -> SagewireError | None:
        settings = self._settings
        turn_id = turn.turn_id
        if not turn_id:
            return invalid_argument("turn_id", "is required: a client-chosen id for the turn")
        if turn.partial and not self._is_bidi:
            return invalid_argument("partial", "only turns on bidi routes may be partial")
        if self._closing:
            return _turn_error(
                turn_id,
                "the session is closing (the client sent close); no more turns are accepted",
                ErrorKind.FAILED_PRECONDITION,
                "SESSION_CLOSING",
            )
        if self._bidi is not None and self._bidi.input_turn:
            if self._bidi.continues(turn_id):
                return None  # the next part of the same turn
            pending = self._bidi.input_turn
            return _turn_error(
                turn_id,
                f"turn {turn_id!r} cannot start while turn {pending!r} is still sending parts "
                f"(its last part was partial); send {pending!r}'s last part without `partial` "
                "first",
                ErrorKind.FAILED_PRECONDITION,
                "TURN_INPUT_OPEN",
            )
        if turn_id in self._seen:
            return SagewireError(
                message=f"turn_id: {turn_id!r} was already used in this session; use a new id",
                kind=ErrorKind.INVALID_ARGUMENT,
                reason="DUPLICATE_TURN_ID",
                metadata={"turn_id": turn_id},
            )
        if len(self._seen) >= settings.max_turns:
            return _turn_error(
                turn_id,
                f"the session already had {settings.max_turns} turns (converse.max_turns); "
                "open a new Converse",
                ErrorKind.RESOURCE_EXHAUSTED,
                "SESSION_TURN_LIMIT",
            )
        full = len(self._running) >= settings.max_concurrent_turns
        if full and len(self._waiting) >= settings.max_queued_turns:
            return SagewireError(
                message=f"{len(self._running)} turns are running and {len(self._waiting)} "
                "waiting, the most this session queues (converse.max_queued_turns); send the "
                "turn again once one finishes",
                kind=ErrorKind.RESOURCE_EXHAUSTED,
                reason="TURN_QUEUE_FULL",
                retry_after_s=0.2,
                metadata={"turn_id": turn_id},
            )
        return None

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
                self._outbox.put_nowait((TurnFailed(turn_id, _cancelled(turn_id)), False))
                return
        if turn_id not in self._seen:
            await self._refuse(
                turn_id,
                _turn_error(
                    turn_id,
                    f"cancel: no turn {turn_id!r} in this session",
                    ErrorKind.NOT_FOUND,
                    "UNKNOWN_TURN",
                ),
            )
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
            event = TurnFailed(turn.turn_id, _cancelled(turn.turn_id))
        except SagewireError as error:
            if error.reason in _SESSION_FATAL and self._settings.sessions:
                self._fail(replace(error, metadata={**error.metadata, "turn_id": turn.turn_id}))
            else:
                event = TurnFailed(turn.turn_id, error)
        except Exception:
            incident = uuid.uuid4().hex[:12]
            log.exception("Converse turn failed unexpectedly, incident %s", incident)
            event = TurnFailed(
                turn.turn_id,
                SagewireError(message=f"internal error in sagewire (incident {incident})"),
            )
        finally:
            self._running.pop(turn.turn_id, None)
        if event is not None:
            self._outbox.put_nowait((event, False))
        self._dispatch()

    async def _execute(self, turn: Turn) -> TurnEnded:
        retried = False
        while True:
            session_id = await self._session_for_turn()
            try:
                if session_id == NEW_SESSION:
                    return await self._open_with_turn(turn)
                return await self._call_model(turn, session_id)
            except SagewireError as error:
                if error.reason != SESSION_REJECTED or retried:
                    raise
                if not (self._settings.sessions and self._settings.reopen_expired):
                    raise
                retried = True
                await self._reopen(session_id)

    async def _call_model(self, turn: Turn, session_id: str) -> TurnEnded:
        call = self._call(turn.body, turn.content_type)
        if self._route.mode is RouteMode.REALTIME:
            result = await self._gateway.invoke(call, session_id=session_id)
            return await self._relay_result(turn.turn_id, result)
        count = size = 0
        async with self._gateway.open_stream(call, session_id=session_id) as stream:
            record = stream.framing is StreamFraming.LINES
            async for piece in stream.pieces:
                await self._emit(TurnChunk(turn.turn_id, piece, record))
                count, size = count + 1, size + len(piece)
        return TurnEnded(turn.turn_id, stream.start.invoked_variant, count, size)

    async def _relay_result(self, turn_id: str, result: InvokeResult) -> TurnEnded:
        """A whole answer as chunks: records under lines framing, else one chunk."""
        if self._framing is StreamFraming.LINES:
            framer = LineFramer()
            pieces = framer.feed(result.body)
            tail = framer.flush()
            chunks = [(p, True) for p in ([*pieces, tail] if tail else pieces)]
        else:
            chunks = [(result.body, is_json(result.content_type))] if result.body else []
        for body, record in chunks:
            await self._emit(TurnChunk(turn_id, body, record))
        return TurnEnded(
            turn_id, result.invoked_variant, len(chunks), sum(len(b) for b, _ in chunks)
        )

    async def _emit(self, chunk: TurnChunk) -> None:
        await self._credits.acquire()
        self._outbox.put_nowait((chunk, True))

    # -- the SageMaker stateful session -----------------------------------------------------

    async def _session_for_turn(self) -> str:
        """The session id this turn is sent with: "" without sessions, the open session's id,
        or NEW_SESSION when this turn opens it (holding the lock until `_open_with_turn`
        has the id, so later turns wait for it)."""
        if not self._settings.sessions:
            return ""
        if self._session_id:
            return self._session_id
        await self._session_lock.acquire()
        opened = self._current_session()  # by the turn this one waited for
        if opened:
            self._session_lock.release()
            return opened
        return NEW_SESSION

    def _current_session(self) -> str:
        return self._session_id

    async def _open_with_turn(self, turn: Turn) -> TurnEnded:
        """The first turn opens the session: InvokeEndpoint, on stream routes too."""
        try:
            call = self._call(turn.body, turn.content_type)
            result = await self._gateway.invoke(call, session_id=NEW_SESSION)
            self._learn(result, f"turn {turn.turn_id!r}")
        finally:
            self._session_lock.release()
        self._announce(turn.turn_id)
        return await self._relay_result(turn.turn_id, result)

    async def _open_session(self) -> None:
        """The route's open request: InvokeEndpoint with NEW_SESSION before any turn."""
        body = self._settings.open_body.encode()
        result = await self._gateway.invoke(self._call(body), session_id=NEW_SESSION)
        self._learn(result, "the open request (converse.open_body)")

    def _learn(self, result: InvokeResult, what: str) -> None:
        session_id, expires = parse_session_header(result.new_session_id)
        problem = "" if session_id else "its answer had no new session id"
        if session_id:
            try:
                validate_options(InvocationOptions(session_id=session_id))
            except SagewireError:
                problem = f"it returned session id {session_id[:80]!r}, which SageMaker refuses"
        if problem:
            raise SagewireError(
                message=f"model {self._name!r} did not open a stateful session for {what}: "
                f"{problem}; check the route's converse settings",
                kind=ErrorKind.FAILED_PRECONDITION,
                reason=SESSION_NOT_OPENED,
                metadata={"model": self._name},
            )
        self._session_id, self._expires_at = session_id, expires

    def _announce(self, turn_id: str) -> None:
        event = SessionChanged(self._session_id, self._expires_at, turn_id, self._reopen_pending)
        self._reopen_pending = False
        self._outbox.put_nowait((event, False))

    async def _reopen(self, rejected: str) -> None:
        """Replace a session SageMaker rejected; turns that raced here reuse the new one."""
        async with self._session_lock:
            if self._session_id != rejected:
                return
            log.info("stateful session on model %r was rejected; reopening", self._name)
            self._reopen_pending = True
            if not self._settings.open_body:
                self._session_id = ""  # the next turn opens it
                return
            await self._open_session()
            self._announce("")

    async def _close_session(self) -> None:
        session_id, self._session_id = self._session_id, ""
        if not session_id or not self._settings.close_body:
            return
        call = self._call(self._settings.close_body.encode(), bounded=False)
        try:
            async with asyncio.timeout(self._settings.close_timeout_s):
                result = await self._gateway.invoke(call, session_id=session_id)
        except Exception as error:  # best effort: the session lapses at its expiry anyway
            log.warning("could not close the stateful session on model %r: %s", self._name, error)
            return
        if result.closed_session_id != session_id:
            log.warning(
                "model %r answered the close request without closing the session", self._name
            )

    def _close_later(self) -> None:
        if self._session_id and self._settings.close_body:
            task = asyncio.get_running_loop().create_task(self._close_session())
            _closing.add(task)
            task.add_done_callback(_closing.discard)
