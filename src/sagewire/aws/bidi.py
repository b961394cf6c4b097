"""SageMaker's HTTP/2 bidirectional streams through the official `aws-sdk-sagemaker-runtime-http2`.

The ONE module that imports that SDK: it is pre-alpha and its API has changed between 0.x
releases, so everything it needs is confined here behind `SageMakerBidiPort` (core/ports.py)
and pinned by tests/integration/test_bidi_adapter.py against the emulator over real TLS.

How a stream is run:
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
- Every wait is bounded: response headers and each receive by `aws.read_timeout_s`, a send by
  `send_timeout_s` (the SDK's 16-chunk input buffer full = the model is not reading), the
  half-close and the final close by `close_timeout_s`.
- Credentials: the SDK's standard AWS chain; region from `aws.region`; endpoint
  `aws.bidi_endpoint_url` or https://runtime.sagemaker.{region}.amazonaws.com:8443.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

# The SDK and awscrt ship no type information (pyproject.toml is not ours to extend).
from aws_sdk_sagemaker_runtime_http2.client import (  # type: ignore[import-untyped]
    AsyncSageMakerRuntimeHTTP2Client,
)
from aws_sdk_sagemaker_runtime_http2.config import (  # type: ignore[import-untyped]
    AsyncSageMakerRuntimeHTTP2Config,
)
from aws_sdk_sagemaker_runtime_http2.models import (  # type: ignore[import-untyped]
    InvokeEndpointWithBidirectionalStreamInput,
    RequestPayloadPart,
    RequestStreamEventPayloadPart,
    ResponseStreamEventPayloadPart,
    ServiceError,
)
from awscrt import io as crt_io  # type: ignore[import-untyped]
from awscrt.exceptions import AwsCrtError  # type: ignore[import-untyped]
from smithy_core.exceptions import CallError
from smithy_http.aio.crt import AWSCRTHTTPClient, AWSCRTHTTPClientConfig

from sagewire.aws.errors import (
    bidi_connection_lost,
    bidi_input_stalled,
    bidi_read_timeout,
    map_bidi_error,
    map_bidi_transport_error,
)
from sagewire.config.settings import AwsSettings
from sagewire.core.errors import ErrorKind, SagewireError
from sagewire.core.types import BidiPart, BidiRequest, BidiStart

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 2.0
# How the SDK names an error code it has no class for ("... - id: <namespace>#Code").
_UNKNOWN_CODE = re.compile(r" - (?:code|id): (?:[\w.]+#)?([A-Za-z0-9_.:-]+)")
# SDK exception attribute → the error field name aws/errors.py reads.
_ERROR_FIELDS = {
    "error_code": "ErrorCode",
    "original_status_code": "OriginalStatusCode",
    "original_message": "OriginalMessage",
    "log_stream_arn": "LogStreamArn",
}


def bidi_endpoint_url(settings: AwsSettings) -> str:
    return (
        settings.bidi_endpoint_url
        or f"https://runtime.sagemaker.{settings.region}.amazonaws.com:8443"
    )


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


class _StreamTransport(AWSCRTHTTPClient):
    """The CRT HTTP/2 transport carrying one bidirectional stream on its own connection."""

    _nodelay: bool = True
    crt_stream: Any = None

    @classmethod
    def prototype(
        cls, tls: crt_io.ClientTlsContext, connect_timeout_s: float, nodelay: bool
    ) -> _StreamTransport:
        proto = cls(client_config=AWSCRTHTTPClientConfig(force_http_2=True))
        proto._tls_ctx = tls
        options = crt_io.SocketOptions()
        options.connect_timeout_ms = max(1, int(connect_timeout_s * 1000))
        proto._socket_options = options
        proto._nodelay = nodelay
        return proto

    def fresh(self) -> _StreamTransport:
        """A transport sharing this one's TLS context and event loop, with no connections."""
        transport = copy.copy(self)
        transport._connections = {}
        transport._closed = False
        transport.crt_stream = None
        return transport

    def __deepcopy__(self, memo: Any) -> _StreamTransport:
        # The SDK deep-copies its config (with the transport) per call; the base class would
        # build a new default TLS context each time and drop the CA bundle.
        return self.fresh()

    async def _await_response(self, stream: Any) -> Any:
        # The CRT writes the request body in a task of its own that fails (error 2080) when the
        # server ended the stream first; read that outcome so it is not logged as lost.
        writer = getattr(stream, "_writer", None)
        if isinstance(writer, asyncio.Task):
            writer.add_done_callback(_consume_outcome)
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


def _consume_outcome(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _tls_context(ca_bundle: str | None) -> crt_io.ClientTlsContext:
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


# -- errors -------------------------------------------------------------------------------------


def _failure(exc: BaseException, endpoint: str, *, started: bool) -> SagewireError:
    """Any SDK/CRT failure as the domain error a caller should see."""
    if isinstance(exc, SagewireError):
        return exc
    if isinstance(exc, ServiceError):
        fields = {
            key: value
            for attr, key in _ERROR_FIELDS.items()
            if (value := getattr(exc, attr, None)) is not None
        }
        return map_bidi_error(type(exc).__name__, exc.message, fields, endpoint)
    if isinstance(exc, AwsCrtError):
        return map_bidi_transport_error(exc.name, endpoint)
    if isinstance(exc, CallError):
        found = _UNKNOWN_CODE.search(exc.message)
        if found:
            return map_bidi_error(found.group(1), exc.message, {}, endpoint)
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, AwsCrtError):
        return _failure(cause, endpoint, started=started)
    if started:
        return bidi_connection_lost(endpoint)
    # e.g. "HTTP/2 could not be negotiated", a socket timeout: no detail worth more than this.
    return map_bidi_transport_error(f"{type(exc).__name__}: {exc}"[:200], endpoint)


# -- one stream ---------------------------------------------------------------------------------


class BidiStream:
    """An open InvokeEndpointWithBidirectionalStream (implements core.ports.BidiStreamPort)."""

    def __init__(
        self,
        sdk_stream: Any,
        transport: _StreamTransport,
        endpoint: str,
        read_timeout_s: float,
        send_timeout_s: float,
        close_timeout_s: float,
    ) -> None:
        self._sdk = sdk_stream
        self._transport = transport
        self._endpoint = endpoint
        self._read_timeout = read_timeout_s
        self._send_timeout = send_timeout_s
        self._close_timeout = close_timeout_s
        self._start: BidiStart | None = None
        self._output: Any = None
        self.input_closed = False
        self.output_done = False
        self._failed: SagewireError | None = None
        self._receiving: asyncio.Future[Any] | None = None
        # The SDK's wait for the response headers, once started; its outcome is always read.
        self._starting: asyncio.Future[Any] | None = None

    async def start(self) -> BidiStart:
        if self._start is not None:
            return self._start
        if self._failed is not None:
            raise self._failed
        try:
            async with asyncio.timeout(self._read_timeout):
                # Shielded: a timeout here must not cancel the SDK's own task.
                response, self._output = await asyncio.shield(self._await_output())
        except TimeoutError:
            raise self._fail(bidi_read_timeout(self._endpoint, self._read_timeout)) from None
        except Exception as exc:
            raise self._fail(_failure(exc, self._endpoint, started=False)) from exc
        self._start = BidiStart(invoked_variant=response.invoked_production_variant or "")
        return self._start

    def _await_output(self) -> asyncio.Future[Any]:
        """The SDK's wait for the response headers, as one task whose outcome is read even
        when nobody waits for it any more (a start that timed out: the TLS failure delay)."""
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._sdk.await_output())
            self._starting.add_done_callback(_consume_outcome)
        return self._starting

    async def send(self, part: BidiPart) -> None:
        if self._failed is not None:
            raise self._failed
        if self.input_closed:
            raise SagewireError(
                message="the input of this bidirectional stream is already closed",
                kind=ErrorKind.FAILED_PRECONDITION,
                reason="INPUT_CLOSED",
            )
        event = RequestStreamEventPayloadPart(
            value=RequestPayloadPart(
                bytes_=part.data,
                data_type=part.data_type,
                completion_state="PARTIAL" if part.partial else "COMPLETE",
            )
        )
        try:
            async with asyncio.timeout(self._send_timeout):
                await self._sdk.input_stream.send(event)
        except TimeoutError:
            raise self._fail(bidi_input_stalled(self._endpoint, self._send_timeout)) from None
        except Exception as exc:
            raise self._fail(_failure(exc, self._endpoint, started=True)) from exc

    async def receive(self) -> BidiPart | None:
        await self.start()
        if self.output_done:
            return None
        while True:
            # The SDK's receive runs in a task of its own that a cancelled or timed-out caller
            # leaves alone: cancelling it mid-wait makes the CRT fail later on a cancelled
            # future from its own thread. Closing the connection ends it.
            if self._receiving is None:
                self._receiving = asyncio.ensure_future(self._output.receive())
            try:
                async with asyncio.timeout(self._read_timeout):
                    event = await asyncio.shield(self._receiving)
                self._receiving = None
            except TimeoutError:
                raise self._fail(bidi_read_timeout(self._endpoint, self._read_timeout)) from None
            except Exception as exc:
                self._receiving = None
                self.output_done = True
                raise self._fail(_failure(exc, self._endpoint, started=True)) from exc
            if event is None:
                self.output_done = True
                if (crt_error := self._transport.broken()) is not None:
                    log.debug("bidi stream to %s ended with %s", self._endpoint, crt_error)
                    raise self._fail(bidi_connection_lost(self._endpoint))
                return None
            if isinstance(event, ResponseStreamEventPayloadPart):
                value = event.value
                return BidiPart(
                    data=value.bytes_ or b"",
                    data_type="UTF8" if value.data_type == "UTF8" else "BINARY",
                    partial=value.completion_state != "COMPLETE",
                )
            # Unknown event kinds a newer service may add: skip, as the SDK does.

    async def close_input(self) -> None:
        """Half-close: send the end-of-input frame. Bounded: a server that already ended the
        stream never drains the SDK's buffer, which would hang an unbounded close."""
        if self.input_closed:
            return
        self.input_closed = True
        try:
            async with asyncio.timeout(self._close_timeout):
                await self._sdk.input_stream.close()
        except TimeoutError:
            if not self.output_done:
                log.debug("bidi input close timed out on endpoint %s", self._endpoint)
        except Exception as exc:
            if not self.output_done:
                raise self._fail(_failure(exc, self._endpoint, started=True)) from exc

    def _fail(self, error: SagewireError) -> SagewireError:
        self._failed = self._failed or error
        return error

    async def aclose(self) -> None:
        """Close everything, bounded. A stream that is not finished both ways is cut at once:
        closing its connection stops the model upstream."""
        finished = self.output_done and self.input_closed and self._failed is None
        try:
            async with asyncio.timeout(self._close_timeout):
                if finished and self._output is not None:
                    await self._output.close()
                await self._transport.close()  # the stream's own connection
        except TimeoutError:
            log.warning("closing a bidi stream to endpoint %s timed out", self._endpoint)
        except Exception:
            log.debug("error while closing a bidi stream", exc_info=True)
        if self._receiving is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._receiving), self._close_timeout)
            self._receiving.cancel()
        # Retrieve the SDK's background outcome so no task is left with an unread exception.
        if self._start is None:
            # Not awaited: a connection stuck in the TLS failure delay may take 10-30 s.
            self._await_output()
        # End the SDK's input buffer without flushing (nobody will drain it now), so the CRT's
        # body writer task finishes instead of waiting forever.
        writer = getattr(self._sdk.input_stream, "_writer", None)
        if writer is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._close_timeout):
                    await writer.close(flush=False)


# -- the client ---------------------------------------------------------------------------------


class SageMakerBidi:
    """Bidirectional streams to SageMaker (implements core.ports.SageMakerBidiPort).

    Use as an async context manager; `open_bidi` streams may run concurrently.
    """

    def __init__(
        self,
        settings: AwsSettings,
        *,
        tcp_nodelay: bool = True,
        send_timeout_s: float = SEND_TIMEOUT_S,
        close_timeout_s: float = CLOSE_TIMEOUT_S,
    ) -> None:
        self._settings = settings
        self._nodelay = tcp_nodelay
        self._send_timeout = send_timeout_s
        self._close_timeout = close_timeout_s
        self.endpoint_url = bidi_endpoint_url(settings)
        self._client: AsyncSageMakerRuntimeHTTP2Client | None = None
        self._prototype: _StreamTransport | None = None

    async def __aenter__(self) -> SageMakerBidi:
        s = self._settings
        self._prototype = _StreamTransport.prototype(
            _tls_context(s.ca_bundle), s.connect_timeout_s, self._nodelay
        )
        config = await AsyncSageMakerRuntimeHTTP2Config.resolve(
            endpoint_uri=self.endpoint_url,
            region=s.region,
            transport=self._prototype.fresh(),
            max_attempts=1,  # a stream is not replayable; callers decide on retries
        )
        self._client = AsyncSageMakerRuntimeHTTP2Client(config=config)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._close_timeout):
                    await client.close()

    @asynccontextmanager
    async def open_bidi(self, request: BidiRequest) -> AsyncIterator[BidiStream]:
        if self._client is None or self._prototype is None:
            raise RuntimeError("SageMakerBidi is not open (use it as an async context manager)")
        transport = self._prototype.fresh()

        def own_transport(config: AsyncSageMakerRuntimeHTTP2Config) -> None:
            config.transport = transport

        sdk_input = InvokeEndpointWithBidirectionalStreamInput(
            endpoint_name=request.endpoint,
            target_variant=request.target_variant or None,
            model_invocation_path=request.model_invocation_path or None,
            model_query_string=request.model_query_string or None,
        )
        try:
            async with asyncio.timeout(self._settings.connect_timeout_s + self._close_timeout):
                sdk_stream = await self._client.invoke_endpoint_with_bidirectional_stream(
                    sdk_input, plugins=[own_transport]
                )
        except TimeoutError:
            await transport.close()
            raise map_bidi_transport_error(
                "request not started in time", request.endpoint
            ) from None
        except Exception as exc:
            await transport.close()
            raise _failure(exc, request.endpoint, started=False) from exc
        stream = BidiStream(
            sdk_stream,
            transport,
            request.endpoint,
            self._settings.read_timeout_s,
            self._send_timeout,
            self._close_timeout,
        )
        try:
            yield stream
        finally:
            # Shielded: a cancelled caller must still get its upstream stream closed.
            await asyncio.shield(stream.aclose())
