"""SageMaker's HTTP/2 bidirectional streams through the official `aws-sdk-sagemaker-runtime-http2`.

The adapter is the only code that imports that SDK: it is pre-alpha and its API has changed
between 0.x releases, so everything it needs is confined to three modules behind
`SageMakerBidiPort` (core/ports.py), pinned by tests/integration/test_bidi_adapter.py against
the emulator over real TLS:
- this one: the client (configuration, opening a stream, closing it whatever happens);
- sagewire.aws.bidi_transport: the CRT HTTP/2 transport, one connection per stream (why: a
  cancelled caller's stream can only be stopped by closing its connection), trust and
  TCP_NODELAY;
- sagewire.aws.bidi_stream: one open stream (bounded send, receive, half-close, close) and the
  SDK's failures as domain errors.

Credentials: the SDK's standard AWS chain; region from `aws.region`; endpoint
`aws.bidi_endpoint_url` or https://runtime.sagemaker.{region}.amazonaws.com:8443.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

# The SDK ships no type information (pyproject.toml is not ours to extend).
from aws_sdk_sagemaker_runtime_http2.client import (  # type: ignore[import-untyped]
    AsyncSageMakerRuntimeHTTP2Client,
)
from aws_sdk_sagemaker_runtime_http2.config import (  # type: ignore[import-untyped]
    AsyncSageMakerRuntimeHTTP2Config,
)
from aws_sdk_sagemaker_runtime_http2.models import (  # type: ignore[import-untyped]
    InvokeEndpointWithBidirectionalStreamInput,
)

from sagewire.aws.bidi_stream import BidiStream, sdk_failure
from sagewire.aws.bidi_transport import StreamTransport, tls_context
from sagewire.aws.errors import map_bidi_transport_error
from sagewire.aws.instrumented import manual_call
from sagewire.config.settings import AwsSettings
from sagewire.core.types import BidiRequest

SEND_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 2.0


def bidi_endpoint_url(settings: AwsSettings) -> str:
    return (
        settings.bidi_endpoint_url
        or f"https://runtime.sagemaker.{settings.region}.amazonaws.com:8443"
    )


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
        self._prototype: StreamTransport | None = None

    async def __aenter__(self) -> SageMakerBidi:
        s = self._settings
        self._prototype = StreamTransport.prototype(
            tls_context(s.ca_bundle), s.connect_timeout_s, self._nodelay
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
        address = urlsplit(bidi_endpoint_url(self._settings)).hostname or ""
        attributes = {
            "aws.sagemaker.endpoint_name": request.endpoint,
            "server.address": address,
            "cloud.region": self._settings.region,
        }
        # Not botocore: the span and metrics sagewire.aws.instrumented gives botocore calls,
        # made here for the whole stream.
        with manual_call("SageMaker Runtime", "InvokeEndpointWithBidirectionalStream", attributes):
            async with self._open(request) as stream:
                yield stream

    @asynccontextmanager
    async def _open(self, request: BidiRequest) -> AsyncIterator[BidiStream]:
        assert self._client is not None
        assert self._prototype is not None
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
            raise sdk_failure(exc, request.endpoint, started=False) from exc
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
