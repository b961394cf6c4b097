"""A small HTTP/2-over-TLS server (the ``h2`` state machine on asyncio) for duplex streams.

Why not hypercorn: a duplex stream must be able to end its response while the client's input is
still open (a model that finishes first). Hypercorn 0.18 kills the whole connection when an ASGI
app does that; with ``h2`` directly the server sends END_STREAM and then RST_STREAM(NO_ERROR),
which RFC 9113 §8.1 prescribes, and only that stream ends.

Each request becomes an ``H2Stream`` handed to ``handler`` in its own task. Input is bounded by
HTTP/2 flow control: received DATA is acknowledged only when the handler reads it, so a client
cannot push more than one window ahead of the model. Output waits for the client's window. A
reset stream or a lost connection cancels the handler's task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import cast

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions

log = logging.getLogger(__name__)
# How long a finished response waits for the client to end its input before resetting it.
INPUT_END_GRACE_S = 5.0

Handler = Callable[["H2Stream"], Awaitable[None]]


class StreamGone(ConnectionError):
    """The client reset the stream or the connection went away."""


class H2Stream:
    """One request/response exchange on an HTTP/2 connection."""

    def __init__(self, conn: _Connection, stream_id: int, headers: dict[str, str]) -> None:
        self._conn = conn
        self.stream_id = stream_id
        self.headers = headers
        self.method = headers.get(":method", "")
        self.path = headers.get(":path", "")
        self._input: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._unacked = 0
        self.input_open = True  # until the client's END_STREAM (or a reset)
        self.responded = False
        self.ended = False  # our END_STREAM sent
        self.gone = False  # reset by the client or connection lost
        self._stop_input = False
        self._window = asyncio.Event()

    # -- input ------------------------------------------------------------------------------
    def _feed(self, data: bytes, flow_length: int) -> None:
        self._unacked += flow_length
        self._input.put_nowait(data)

    def _end_input(self) -> None:
        self.input_open = False
        self._input.put_nowait(None)

    async def read(self) -> bytes | None:
        """The next DATA bytes from the client; None once its input has ended."""
        if self.gone:
            raise StreamGone("stream reset by the client")
        data = await self._input.get()
        if self.gone:
            raise StreamGone("stream reset by the client")
        if data is None:
            self._input.put_nowait(None)  # stays ended for later reads
            return None
        if self._unacked:
            self._conn.ack(self.stream_id, self._unacked)
            self._unacked = 0
        return data

    # -- output -----------------------------------------------------------------------------
    async def respond(
        self, status: int, headers: dict[str, str], body: bytes | None = None
    ) -> None:
        """Send response headers; with ``body`` also the body and END_STREAM."""
        self.responded = True
        pairs = [(":status", str(status)), *((k.lower(), v) for k, v in headers.items())]
        self._conn.send_headers(self.stream_id, pairs, end_stream=body == b"")
        if body:
            await self.write(body, end=True)
        elif body == b"":
            self._finish()

    async def write(self, data: bytes, *, end: bool = False) -> None:
        """Send ``data`` as flow control allows (and END_STREAM after it when ``end``)."""
        view = memoryview(data)
        while view:
            if self.gone:
                raise StreamGone("stream reset by the client")
            window = self._conn.window(self.stream_id)
            if window <= 0:
                self._window.clear()
                await self._window.wait()
                continue
            chunk, view = view[:window], view[window:]
            self._conn.send_data(self.stream_id, bytes(chunk), end_stream=end and not view)
        if end and not data:
            self._conn.end_stream(self.stream_id)
        if end:
            self._finish()
        await self._conn.drain()

    async def end(self, *, stop_input: bool = False) -> None:
        """END_STREAM on the response; with ``stop_input`` also RST_STREAM NO_ERROR at once
        when the client's input is still open (the ``close_after_parts`` fault)."""
        self._stop_input = stop_input
        await self.write(b"", end=True)

    def _finish(self) -> None:
        self.ended = True
        if self.input_open and not self.gone:
            if self._stop_input:
                self._conn.reset(self.stream_id, h2.errors.ErrorCodes.NO_ERROR)
                return
            # The answer is complete but the client's input is still open. Like a real HTTP/2
            # server, let it end its side (its END_STREAM usually follows at once: resetting
            # now makes the CRT client report AWS_ERROR_HTTP_STREAM_HAS_COMPLETED); only a
            # client that keeps it open past the grace is told to stop (RFC 9113 §8.1).
            self._conn.reset_later(self.stream_id, INPUT_END_GRACE_S)

    def abort(self) -> None:
        """Reset the stream with an error (the emulator gives up on it)."""
        if not self.gone:
            self._conn.reset(self.stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
            self.gone = True

    def drop_connection(self) -> None:
        """Abort the whole TCP connection under this stream (fault injection)."""
        self.gone = True
        self._conn.abort()

    def _window_opened(self) -> None:
        self._window.set()

    def _lost(self) -> None:
        self.gone = True
        self._window.set()
        self._input.put_nowait(None)


class _Connection(asyncio.Protocol):
    """One client connection: feeds bytes to h2, dispatches events, writes h2's output."""

    def __init__(
        self,
        handler: Handler,
        tasks: set[asyncio.Task[None]],
        connections: set[_Connection],
    ) -> None:
        self._handler = handler
        self._tasks = tasks
        self._connections = connections
        self._h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        self._transport: asyncio.Transport | None = None
        self._streams: dict[int, H2Stream] = {}
        self._stream_tasks: dict[int, asyncio.Task[None]] = {}
        self._writable = asyncio.Event()
        self._writable.set()

    # -- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport whatever the loop: uvloop's TLS transport (`sagewire local`) is
        # not an asyncio.Transport subclass but has the same methods.
        self._transport = cast(asyncio.Transport, transport)
        self._connections.add(self)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
            transport.close()  # HTTP/2 via ALPN only, as SageMaker's port 8443
            return
        self._h2.initiate_connection()
        self._flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._flush()
            self._close()
            return
        for event in events:
            self._dispatch(event)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        self._transport = None
        self._writable.set()
        for stream_id in list(self._streams):
            self._forget(stream_id, cancel=True)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # -- h2 events --------------------------------------------------------------------------
    def _dispatch(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._start(event.stream_id, dict(event.headers or []))  # type: ignore[arg-type]
        elif isinstance(event, h2.events.DataReceived):
            stream = self._streams.get(event.stream_id or 0)
            if stream is not None:
                stream._feed(event.data or b"", event.flow_controlled_length or 0)
            elif event.stream_id:  # a stream we already finished: keep the connection window
                # open (h2 then updates only the connection's window; stream id 0 is refused
                # with ValueError, which killed the whole connection).
                self._h2.acknowledge_received_data(
                    event.flow_controlled_length or 0, event.stream_id
                )
        elif isinstance(event, h2.events.StreamEnded):
            stream = self._streams.get(event.stream_id or 0)
            if stream is not None:
                stream._end_input()
        elif isinstance(event, h2.events.StreamReset):
            self._forget(event.stream_id or 0, cancel=True)
        elif isinstance(event, h2.events.WindowUpdated):
            targets = (
                self._streams.values()
                if not event.stream_id
                else [s for s in [self._streams.get(event.stream_id)] if s is not None]
            )
            for stream in targets:
                stream._window_opened()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._close()

    def _start(self, stream_id: int, headers: dict[str, str]) -> None:
        stream = H2Stream(self, stream_id, headers)
        self._streams[stream_id] = stream
        task = asyncio.get_running_loop().create_task(self._run(stream))
        self._stream_tasks[stream_id] = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, stream: H2Stream) -> None:
        try:
            await self._handler(stream)
        except (StreamGone, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("bidi handler failed on stream %d", stream.stream_id)
            stream.abort()
        finally:
            if not stream.ended and not stream.gone:
                stream.abort()  # a handler that returned without ending its response
            self._streams.pop(stream.stream_id, None)
            self._stream_tasks.pop(stream.stream_id, None)
            self._flush()

    def _forget(self, stream_id: int, *, cancel: bool) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is not None:
            stream._lost()
        task = self._stream_tasks.pop(stream_id, None)
        if cancel and task is not None:
            task.cancel()

    # -- used by H2Stream -------------------------------------------------------------------
    def send_headers(
        self, stream_id: int, headers: list[tuple[str, str]], end_stream: bool
    ) -> None:
        self._h2.send_headers(stream_id, headers, end_stream=end_stream)
        self._flush()

    def send_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        self._h2.send_data(stream_id, data, end_stream=end_stream)
        self._flush()

    def end_stream(self, stream_id: int) -> None:
        self._h2.end_stream(stream_id)
        self._flush()

    def reset(self, stream_id: int, code: h2.errors.ErrorCodes) -> None:
        with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self._h2.reset_stream(stream_id, error_code=code)
        self._flush()

    def reset_later(self, stream_id: int, delay_s: float) -> None:
        """RST_STREAM NO_ERROR after ``delay_s`` unless the stream has closed by then (the
        client's END_STREAM); data it sends meanwhile is acknowledged and dropped."""

        def reset_if_open() -> None:
            stream = self._h2.streams.get(stream_id)
            if stream is not None and not stream.closed:
                self.reset(stream_id, h2.errors.ErrorCodes.NO_ERROR)

        asyncio.get_running_loop().call_later(delay_s, reset_if_open)

    def ack(self, stream_id: int, length: int) -> None:
        with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self._h2.acknowledge_received_data(length, stream_id)
        self._flush()

    def window(self, stream_id: int) -> int:
        try:
            window = self._h2.local_flow_control_window(stream_id)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            raise StreamGone("stream closed") from None
        return min(window, self._h2.max_outbound_frame_size)

    async def drain(self) -> None:
        await self._writable.wait()
        if self._transport is None:
            raise StreamGone("connection lost")

    def _flush(self) -> None:
        data = self._h2.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


class H2Server:
    """Serve ``handler`` over HTTP/2 with TLS on ``host:port`` (0 = a free port)."""

    def __init__(self, handler: Handler, context: ssl.SSLContext) -> None:
        self._handler = handler
        self._context = context
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._connections: set[_Connection] = set()
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self._handler, self._tasks, self._connections),
            host,
            port,
            ssl=self._context,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self, grace_s: float = 1.0) -> None:
        """Stop listening, cancel in-flight streams and wait (bounded) for their handlers."""
        if self._server is None:
            return
        self._server.close()
        for connection in list(self._connections):
            connection.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace_s)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace_s):
                await self._server.wait_closed()
        self._server = None
