"""One HTTP/1.1 exchange at a time on one keep-alive connection, for sagewire.aws.lean_http1's
pool: the request written whole (`request_head`: aiohttp's bytes), the answer parsed by
httptools as it comes (`Reply`), failures raised as botocore exceptions — before the answer's
headers from the exchange, after them from `Reply.read` (the module doc of lean_http1 has the
whole contract and why this is sagewire's own code).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Protocol, cast

import httptools
from botocore.exceptions import (
    ConnectionClosedError,
    EndpointConnectionError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from multidict import CIMultiDict, CIMultiDictProxy

from sagewire.aws.read_deadline import ReadDeadline

MAX_HEAD_BYTES = 64 * 1024  # status line and headers of one answer
_NO_HEADERS: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())  # read-only: one for all


class Owner(Protocol):
    """What a connection needs of its pool (sagewire.aws.lean_http1.Http1Pool)."""

    loop: asyncio.AbstractEventLoop
    read_s: float  # the read timeout; 0: none
    endpoint_url: str

    def release(self, connection: Connection) -> None:
        """Take the connection back after a clean keep-alive answer."""

    def forget(self, connection: Connection) -> None:
        """The connection closed: its place is free."""


def _unsafe(text: str) -> bool:
    return "\r" in text or "\n" in text


_UNSAFE = (
    "Newline or carriage return character detected in HTTP status message or header. This is a "
    "potential security issue."
)


def request_head(path: str, host: str, headers: Mapping[str, str]) -> bytes:
    """The request line and headers aiohttp writes for POST `path` with `headers` (UTF-8).
    Raises ValueError, as aiohttp does, for a CR or LF in a name or value (or the path)."""
    lines = [f"POST {path} HTTP/1.1", ""]  # [1]: the Host line, first as aiohttp writes it
    given_host = False
    accept = False
    for name, value in headers.items():
        lower = name.lower()
        if lower == "host":
            if given_host:  # not written (the first one is), but checked as aiohttp checks it
                if _unsafe(name) or _unsafe(value):
                    raise ValueError(_UNSAFE)
                continue
            given_host = True
            lines[1] = f"{name}: {value}"
            continue
        accept = accept or lower == "accept"
        lines.append(f"{name}: {value}")
    if not given_host:
        lines[1] = f"Host: {host}"
    if not accept:
        lines.append("Accept: */*")
    lines.append("\r\n")
    head = "\r\n".join(lines)
    # Each line ends with the one CRLF written here: any other CR or LF came in a name or value
    # (one scan of the whole head rather than two per header).
    if head.count("\n") != len(lines) or head.count("\r") != len(lines):
        raise ValueError(_UNSAFE)
    return head.encode("utf-8")


class Reply:
    """One HTTP answer: `status`, `headers` (case-insensitive, decoded as aiohttp decodes them),
    `raw_headers` ((name, value) bytes), `url`; `await read()` gives the whole body."""

    __slots__ = ("_body", "_connection", "_done", "headers", "raw_headers", "status", "url")

    def __init__(self, connection: Connection, url: str) -> None:
        self._connection = connection
        self.url = url
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.headers: CIMultiDictProxy[str] = _NO_HEADERS  # until the headers are complete
        self._body: list[bytes] = []
        self._done: asyncio.Future[None] = connection.loop.create_future()

    async def read(self) -> bytes:
        """The whole body. Raises ResponseStreamingError (the connection failed mid-body) or
        ReadTimeoutError (silence for the read timeout); cancellation closes the connection."""
        if not self._done.done():
            try:
                await self._done
            except asyncio.CancelledError:
                self.close()
                raise
        self._done.result()
        return b"".join(self._body)

    def close(self) -> None:
        """Drop the connection unless the answer is complete (then it is already back in the
        pool or closed)."""
        # Not `self._done.done()`: a read() cancelled while awaiting it cancels `_done` itself,
        # and the connection, still carrying this answer, would stay busy for good.
        if self._connection._answer is self:
            self._connection.abort()


class Connection(asyncio.Protocol):
    """One keep-alive connection: at most one exchange at a time."""

    def __init__(self, pool: Owner) -> None:
        self._pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._answer: Reply | None = None
        self._head: asyncio.Future[Reply] | None = None  # until the headers are complete
        self._head_bytes = 0
        self._framed = False  # Content-Length or chunked: the end is known without a close
        self._read = ReadDeadline(self.loop, self._read_timed_out)

    # -- the exchange ------------------------------------------------------------------------

    async def exchange(self, head: bytes, body: bytes, url: str) -> Reply:
        assert self.transport is not None
        answer = Reply(self, url)
        self._answer = answer
        self._head = self.loop.create_future()
        self._head_bytes = 0
        self._framed = False
        self.transport.writelines((head, body))
        if self._pool.read_s:  # 0: no read timeout, as aiohttp's sock_read=0
            self._read.arm(self._pool.read_s)
        try:
            return await self._head
        except asyncio.CancelledError:
            # Only while it still carries this exchange: once the answer was whole (cancelled
            # after it came, before this task resumed) the connection went back to the pool,
            # and another caller may be using it already.
            if self._answer is answer:
                self.abort()
            raise

    def _fail(self, before_head: BaseException, after_head: BaseException) -> None:
        """End the exchange in flight with the error for where it stands."""
        self._read.stop()
        if self._head is not None and not self._head.done():
            self._head.set_exception(before_head)
        elif self._answer is not None and not self._answer._done.done():
            self._answer._done.set_exception(after_head)
            self._answer._done.exception()  # retrieved: a caller that never reads is no error
        self._head = None
        self._answer = None

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but are one in behaviour.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._answer is None:  # nothing asked for: the connection cannot be trusted
            self.abort()
            return
        if self._read.reading:
            self._read.arm(self._pool.read_s)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._lost(exc)
            return
        if self._head is not None:  # the headers are still coming: bound what they may take
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._lost(ValueError("the answer's status line and headers exceed 64 KiB"))

    def connection_lost(self, exc: Exception | None) -> None:
        answer = self._answer
        if (
            exc is None
            and answer is not None
            and self._head is None
            and not self._framed
            and not answer._done.done()
        ):  # an answer delimited by the close itself (neither Content-Length nor chunked)
            self._read.stop()
            answer._done.set_result(None)
            self._answer = None
        self._lost(exc)

    def _lost(self, exc: BaseException | None) -> None:
        url = self._answer.url if self._answer is not None else self._pool.endpoint_url
        cause = exc or ConnectionResetError("the server closed the connection")
        if isinstance(exc, OSError):
            early: BaseException = EndpointConnectionError(endpoint_url=url, error=exc)
        else:
            early = ConnectionClosedError(endpoint_url=url, error=cause, request=None)
        self._fail(early, ResponseStreamingError(error=cause))
        self.abort()

    # -- httptools callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._answer is None:  # more after the answer, in the same read: nobody asked
            raise ValueError("data after the answer that nobody asked for")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._answer is not None:
            self._answer.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        answer = self._answer
        status = self._parser.get_status_code()
        if answer is None or status < 200:  # an informational answer: the real one follows
            if answer is not None:
                answer.raw_headers.clear()
            return
        # The count in data_received bounds a head spread over reads; this one, a head that
        # came whole in one read (up to the transport's read size).
        if sum(len(name) + len(value) + 4 for name, value in answer.raw_headers) > MAX_HEAD_BYTES:
            raise ValueError("the answer's status line and headers exceed 64 KiB")
        answer.status = status
        headers: CIMultiDict[str] = CIMultiDict()
        for name, value in answer.raw_headers:
            lower = name.lower()
            if lower == b"content-length" or (
                lower == b"transfer-encoding" and b"chunked" in value.lower()
            ):
                self._framed = True
            headers.add(
                name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape")
            )
        answer.headers = CIMultiDictProxy(headers)
        if self._head is not None and not self._head.done():
            self._head.set_result(answer)
        self._head = None

    def on_body(self, body: bytes) -> None:
        if self._answer is not None:
            self._answer._body.append(body)

    def on_message_complete(self) -> None:
        answer = self._answer
        if answer is None or self._head is not None:  # informational: keep waiting
            return
        self._answer = None
        self._read.stop()
        if self._parser.should_keep_alive() and not self.closed:
            self._pool.release(self)
        else:
            self.abort()
        if not answer._done.done():
            answer._done.set_result(None)

    def _read_timed_out(self) -> None:
        url = self._answer.url if self._answer is not None else self._pool.endpoint_url
        self._fail(ReadTimeoutError(endpoint_url=url), ReadTimeoutError(endpoint_url=url))
        self.abort()

    def usable(self) -> bool:
        """Open, and not closing: a transport closes itself on the server's FIN (the default
        eof_received) a loop turn before connection_lost; aiohttp's pool checks the same."""
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    def abort(self) -> None:
        """Close now (an unfinished exchange fails), and give the pool its place back."""
        if self.closed:
            return
        self.closed = True
        self._read.close()
        if self._answer is not None:
            self._lost(None)
        if self.transport is not None:
            self.transport.abort()
        self._pool.forget(self)
