"""The CRT HTTP/2 transport under sagewire's bidirectional streams (one connection per stream).

Part of the SDK adapter (sagewire.aws.bidi); like the rest of it, pinned by
tests/integration/test_bidi_adapter.py.
- CRT transport (the only one that does duplex), forced to HTTP/2, **one connection per
  stream**. The CRT exposes no per-stream reset, so closing the connection is the only way to
  stop an upstream stream at once when the caller cancels; it also keeps one session's TCP
  head-of-line blocking and the server's per-connection stream limit away from the others.
  Per-stream transports are cheap copies of one prototype: the TLS context (~16 ms to build)
  and the CRT event loop are shared.
- Trust: `aws.ca_bundle` replaces the transport's TLS context (the SDK has no CA option and
  ignores AWS_CA_BUNDLE); unset, the system store.
- TCP_NODELAY: the CRT has no socket option for it, and without it small parts wait ~40 ms on
  Nagle + delayed ACK. Right after the CRT connects, the new TCP socket is found in
  /proc/self/fd and the option set on it (Linux; elsewhere nothing happens).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import socket
from typing import Any

# awscrt ships no type information (pyproject.toml is not ours to extend).
from awscrt import io as crt_io  # type: ignore[import-untyped]
from smithy_http.aio.crt import AWSCRTHTTPClient, AWSCRTHTTPClientConfig

from sagewire.core.errors import ErrorKind, SagewireError

log = logging.getLogger(__name__)


# -- TCP_NODELAY on the CRT's socket --------------------------------------------------------------


def _tcp_sockets() -> dict[str, int]:
    """This process's sockets, inode → fd ({} where /proc is not available)."""
    found: dict[str, int] = {}
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return found
    for name in names:
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/self/fd/{name}")
            if link.startswith("socket:"):
                found[link] = int(name)
    return found


def set_nodelay_on_new_sockets(before: dict[str, int], port: int) -> int:
    """Set TCP_NODELAY on TCP sockets opened since `before` that talk to `port`; count them."""
    done = 0
    for inode, fd in _tcp_sockets().items():
        if inode in before:
            continue
        try:
            dup = os.dup(fd)
        except OSError:
            continue
        try:
            sock = socket.socket(fileno=dup)
        except OSError:
            os.close(dup)
            continue
        with sock:
            if sock.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            with contextlib.suppress(OSError):
                if sock.getpeername()[1] == port:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    done += 1
    return done


# -- the transport ------------------------------------------------------------------------------


class StreamTransport(AWSCRTHTTPClient):
    """The CRT HTTP/2 transport carrying one bidirectional stream on its own connection."""

    _nodelay: bool = True
    crt_stream: Any = None

    @classmethod
    def prototype(
        cls, tls: crt_io.ClientTlsContext, connect_timeout_s: float, nodelay: bool
    ) -> StreamTransport:
        proto = cls(client_config=AWSCRTHTTPClientConfig(force_http_2=True))
        proto._tls_ctx = tls
        options = crt_io.SocketOptions()
        options.connect_timeout_ms = max(1, int(connect_timeout_s * 1000))
        proto._socket_options = options
        proto._nodelay = nodelay
        return proto

    def fresh(self) -> StreamTransport:
        """A transport sharing this one's TLS context and event loop, with no connections."""
        transport = copy.copy(self)
        transport._connections = {}
        transport._closed = False
        transport.crt_stream = None
        return transport

    def __deepcopy__(self, memo: Any) -> StreamTransport:
        # The SDK deep-copies its config (with the transport) per call; the base class would
        # build a new default TLS context each time and drop the CA bundle.
        return self.fresh()

    async def _await_response(self, stream: Any) -> Any:
        # The CRT writes the request body in a task of its own that fails (error 2080) when the
        # server ended the stream first; read that outcome so it is not logged as lost.
        writer = getattr(stream, "_writer", None)
        if isinstance(writer, asyncio.Task):
            writer.add_done_callback(consume_outcome)
        self.crt_stream = stream
        return await super()._await_response(stream)

    def broken(self) -> str | None:
        """The CRT's error name when the HTTP/2 stream ended in an error (connection dropped,
        reset): the SDK then reports a plain end of output, indistinguishable from a clean end.
        """
        completion = getattr(self.crt_stream, "_completion_future", None)
        if completion is None or not completion.done() or completion.cancelled():
            return None
        error = completion.exception()
        return None if error is None else str(getattr(error, "name", type(error).__name__))

    async def _create_connection(self, url: Any) -> Any:
        before = _tcp_sockets() if self._nodelay else {}
        connection = await super()._create_connection(url)
        if self._closed:
            # The stream was closed while this connection was still being made (slow connect,
            # TLS failure delay): do not let it outlive the stream.
            await connection.close()
            raise ConnectionAbortedError("bidi stream closed while connecting")
        if self._nodelay:
            port = url.port or (443 if url.scheme == "https" else 80)
            if not set_nodelay_on_new_sockets(before, port):
                log.debug("TCP_NODELAY: no new socket to port %d found", port)
        return connection


def consume_outcome(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def tls_context(ca_bundle: str | None) -> crt_io.ClientTlsContext:
    options = crt_io.TlsContextOptions()
    if ca_bundle:
        if not os.path.isfile(ca_bundle):
            raise SagewireError(
                message=f"aws.ca_bundle {ca_bundle!r} is not a readable file",
                kind=ErrorKind.FAILED_PRECONDITION,
                reason="CA_BUNDLE_MISSING",
            )
        options.override_default_trust_store_from_path(None, ca_bundle)
    return crt_io.ClientTlsContext(options)
