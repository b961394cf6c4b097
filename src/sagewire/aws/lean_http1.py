"""The lean InvokeEndpoint path's HTTP/1.1: each request written whole on a pooled keep-alive
connection, each answer parsed by httptools (llhttp, the parser aiohttp itself is built on).

Why our own exchange rather than aiohttp's ClientSession: inside the grpc.aio server, one
InvokeEndpoint through aiohttp cost ~0.25 ms more wall time at concurrency 1 than the same
request and answer on an asyncio.Protocol (`python -m bench.grpc_floor` with the floor's
forwarder switched between the two) — most of issue 15's unary latency target. What aiohttp
does per request that this path does not need: cookie and redirect handling, tracing hooks, a
writer task, a StreamReader per body, timers per chunk. Everything else stays a library's: the
parsing (httptools), the TLS context (botocore's, via sagewire.aws.lean_http), the exceptions
(botocore's). Response streams and proxies (HTTP(S)_PROXY) stay on aiohttp (LeanHttp).

Kept from aiohttp as aiobotocore configures it, so the lean path fails the same way:
- the bytes sent: aiohttp's for the same call (Host first, then the given headers in order,
  then `Accept: */*` unless given; a CR or LF in a header is refused with aiohttp's ValueError);
- the pool: at most `limit` connections (a caller waits for one, first come first served),
  idle ones reused newest first and closed after 12 s idle (aiobotocore's keep-alive);
- timeouts: connect (TCP and TLS) within `connect_s`, else ConnectTimeoutError; the read
  timeout is silence for `read_s` from the request's end or the last byte, ReadTimeoutError;
- failures before the answer's headers are complete raise from `post` (EndpointConnectionError
  for a connect that failed, with ConnectFailed as its `error`: nothing was sent; otherwise
  ConnectionClosedError or EndpointConnectionError: the request may have arrived); after them,
  from `Reply.read` (ResponseStreamingError, ReadTimeoutError), as aiohttp raises mid-body.
A connection is reused only after its answer ended cleanly with keep-alive; anything else
(cancellation, a parse error, data nobody asked for) closes it. Here: the pool; one exchange on
one connection is sagewire.aws.lean_http1_connection.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Mapping
from urllib.parse import urlsplit

from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError, SSLError

from sagewire.aws.lean_http1_connection import Connection, Reply, request_head

__all__ = ["KEEPALIVE_S", "ConnectFailed", "Http1Pool", "Reply", "request_head"]

KEEPALIVE_S = 12.0  # aiobotocore's DEFAULT_KEEPALIVE_TIMEOUT


class ConnectFailed(OSError):
    """A TCP connect that failed (refused, unreachable, DNS): nothing was sent. Carried as the
    `error` of botocore's EndpointConnectionError (sagewire.aws.errors reads it)."""


class Http1Pool:
    """Keep-alive HTTP/1.1 connections to one endpoint (`endpoint_url`, http or https);
    `post(...)` sends one request. Close with `close()`."""

    def __init__(
        self,
        endpoint_url: str,
        limit: int,
        connect_s: float,
        read_s: float,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        parts = urlsplit(endpoint_url)
        tls = parts.scheme == "https"
        self.endpoint_url = endpoint_url
        self.netloc = parts.netloc
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if tls else 80)
        self._ssl = ssl_context if tls else None
        self._limit = limit
        self._connect_s = connect_s
        self.read_s = read_s
        self.loop = asyncio.get_running_loop()
        self._idle: list[Connection] = []
        self._open = 0  # connections counted against the limit: busy, idle and connecting
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._sweep: asyncio.TimerHandle | None = None
        self._closed = False

    async def post(self, url: str, headers: Mapping[str, str], body: bytes) -> Reply:
        """Send POST `url` (on this pool's endpoint); the answer once its headers are complete.
        Raises botocore's exceptions (see the module doc) or ValueError for a CR/LF header."""
        rest = url.split("://", 1)[-1]
        slash = rest.find("/")
        path = rest[slash:] if slash >= 0 else "/"
        head = request_head(path, self.netloc, headers)
        connection = await self._acquire(url)
        return await connection.exchange(head, body, url)

    async def _acquire(self, url: str) -> Connection:
        while True:
            now = self.loop.time()
            while self._idle:
                connection = self._idle.pop()
                if connection.usable() and now - connection.idle_since < KEEPALIVE_S:
                    return connection
                connection.abort()
            if self._open < self._limit:
                self._open += 1
                return await self._connect(url)
            waiter = self.loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                elif not waiter.cancelled():
                    self._wake()  # it was woken for a place it will not take: pass it on
                raise

    async def _connect(self, url: str) -> Connection:
        connection = Connection(self)
        try:
            async with asyncio.timeout(self._connect_s or None):
                await self.loop.create_connection(
                    lambda: connection,
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl is not None else None,
                )
        except BaseException as exc:
            connection.closed = True
            self._open -= 1
            self._wake()
            if isinstance(exc, ssl.SSLError):
                raise SSLError(endpoint_url=url, error=exc) from exc
            if isinstance(exc, TimeoutError):
                raise ConnectTimeoutError(endpoint_url=url, error=exc) from exc
            if isinstance(exc, OSError):
                failed = ConnectFailed(exc.errno, exc.strerror or str(exc))
                raise EndpointConnectionError(endpoint_url=url, error=failed) from exc
            raise
        return connection

    def release(self, connection: Connection) -> None:
        """Back to the idle set after a clean keep-alive answer (closed, once the pool is)."""
        if self._closed:
            connection.abort()
            return
        connection.idle_since = self.loop.time()
        self._idle.append(connection)
        if self._sweep is None:
            self._sweep = self.loop.call_later(KEEPALIVE_S, self._sweep_idle)
        self._wake()

    def forget(self, connection: Connection) -> None:
        """A connection closed: its place goes to the next caller waiting."""
        if connection in self._idle:
            self._idle.remove(connection)
        self._open -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _sweep_idle(self) -> None:
        self._sweep = None
        now = self.loop.time()
        for connection in [c for c in self._idle if now - c.idle_since >= KEEPALIVE_S]:
            connection.abort()
        if self._idle:
            self._sweep = self.loop.call_later(KEEPALIVE_S, self._sweep_idle)

    def close(self) -> None:
        """Close every idle connection; busy ones close as their exchanges end."""
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for connection in list(self._idle):
            connection.abort()

    def __repr__(self) -> str:
        return f"Http1Pool({self.endpoint_url!r}, open={self._open}, idle={len(self._idle)})"
