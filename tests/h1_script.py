"""Scripted raw HTTP/1.1 servers on loopback for tests/unit/test_lean_http1.py.

A `ScriptedServer` listens on 127.0.0.1 port 0 (TLS when given a context); its n-th accepted
connection runs `scripts[n]` (a coroutine given that connection as a `Peer`), and every later
connection runs `serve`: answer each request with 200 and `echo:` + its body, keep-alive. Every
request a script reads is recorded with its exact bytes. Scripts that must stay silent wait on
`server.release`, set when the server closes, so nothing outlives a test.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field

BOUND_S = 20.0  # how long a test waits for anything that must happen (far above any stall)
_LENGTH = re.compile(rb"(?im)^content-length:[ \t]*(\d+)\r$")


def answer(body: bytes = b"{}", *, status: bytes = b"200 OK", extra: bytes = b"") -> bytes:
    """A complete Content-Length answer; `extra`: more header lines, each ending in CRLF."""
    return (
        b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n" + extra
        + b"Content-Length: %d\r\n\r\n" % len(body) + body
    )  # fmt: skip


@dataclass
class Peer:
    """One accepted connection, server side."""

    server: ScriptedServer
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    requests: list[bytes] = field(default_factory=list)
    finished: asyncio.Event = field(default_factory=asyncio.Event)  # its script has ended

    async def request(self) -> bytes:
        """The next whole request (head and Content-Length body), recorded."""
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = _LENGTH.search(head)
        data = head + await self.reader.readexactly(int(length.group(1)) if length else 0)
        self.requests.append(data)
        async with self.server.arrived:
            self.server.arrived.notify_all()
        return data

    async def send(self, *pieces: bytes) -> None:
        """Each piece in its own write, flushed before the next."""
        for piece in pieces:
            self.writer.write(piece)
            await self.writer.drain()

    async def closed_by_client(self) -> None:
        """Returns once the client has closed (or reset) this connection."""
        with suppress(ConnectionError):
            while await self.reader.read(65536):
                pass

    def reset(self) -> None:
        """Close with a TCP RST (SO_LINGER 0), not a FIN."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


async def serve(peer: Peer) -> None:
    """Answer every request `echo:` + its body, keep-alive, until the client closes."""
    while True:
        body = (await peer.request()).split(b"\r\n\r\n", 1)[1]
        await peer.send(answer(b"echo:" + body))


type Script = Callable[[Peer], Awaitable[None]]


class ScriptedServer:
    def __init__(self, scripts: Sequence[Script]) -> None:
        self.scripts = list(scripts)
        self.peers: list[Peer] = []
        self.release = asyncio.Event()
        self.arrived = asyncio.Condition()
        self.port = 0

    @property
    def requests(self) -> list[bytes]:
        """Every request read, in arrival order per connection, connections in accept order."""
        return [request for peer in self.peers for request in peer.requests]

    async def wait_requests(self, count: int) -> None:
        async with asyncio.timeout(BOUND_S), self.arrived:
            await self.arrived.wait_for(lambda: len(self.requests) >= count)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = Peer(self, reader, writer)
        index = len(self.peers)
        self.peers.append(peer)
        script = self.scripts[index] if index < len(self.scripts) else serve
        try:
            with suppress(ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
                await script(peer)
        finally:
            peer.finished.set()
            writer.transport.abort()


@asynccontextmanager
async def scripted_server(
    scripts: Sequence[Script] = (), tls: ssl.SSLContext | None = None
) -> AsyncIterator[ScriptedServer]:
    server = ScriptedServer(scripts)
    listener = await asyncio.start_server(server._handle, "127.0.0.1", 0, ssl=tls)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        server.release.set()
        listener.close()
        for peer in server.peers:
            peer.writer.transport.abort()
        async with asyncio.timeout(BOUND_S):
            await listener.wait_closed()


async def eventually(check: Callable[[], bool], bound_s: float = BOUND_S) -> None:
    """Waits until `check()` holds (for state the code under test exposes no event for)."""
    async with asyncio.timeout(bound_s):
        while not check():  # noqa: ASYNC110 (no event to wait on)
            await asyncio.sleep(0.005)
