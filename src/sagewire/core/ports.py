"""What the core needs from SageMaker, as a Protocol the AWS adapter implements.

The core depends on this shape, not on aioboto3, so its logic reads without AWS details.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from sagewire.core.types import (
    BidiPart,
    BidiRequest,
    BidiStart,
    EndpointRequest,
    InvokeResult,
    StreamStart,
)


class ResponseStream(Protocol):
    """An open InvokeEndpointWithResponseStream response."""

    start: StreamStart

    def parts(self) -> AsyncIterator[bytes]:
        """PayloadPart bytes as they arrive; raises SagewireError on a mid-stream failure."""
        ...


class SageMakerRuntimePort(Protocol):
    """The SageMaker Runtime operations sagewire uses."""

    async def invoke_endpoint(self, request: EndpointRequest) -> InvokeResult: ...

    def invoke_endpoint_stream(
        self, request: EndpointRequest
    ) -> AbstractAsyncContextManager[ResponseStream]: ...


class BidiStreamPort(Protocol):
    """One open InvokeEndpointWithBidirectionalStream. Every method is bounded in time and
    raises SagewireError; send and receive may run concurrently (one sender, one receiver)."""

    async def start(self) -> BidiStart:
        """Wait for the response headers (connection, TLS and HTTP errors surface here)."""
        ...

    async def send(self, part: BidiPart) -> None:
        """Send one part upstream now."""
        ...

    async def receive(self) -> BidiPart | None:
        """The next part the model produced, or None when the model ended the stream."""
        ...

    async def close_input(self) -> None:
        """Half-close: no more parts from this side; the model's output keeps flowing."""
        ...


class SageMakerBidiPort(Protocol):
    """SageMaker's HTTP/2 bidirectional streams."""

    def open_bidi(self, request: BidiRequest) -> AbstractAsyncContextManager[BidiStreamPort]:
        """Open a stream; leaving the block closes it upstream at once (bounded)."""
        ...
