"""What the core needs from SageMaker, as a Protocol the AWS adapter implements.

The core depends on this shape, not on aioboto3, so its logic reads without AWS details.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from sagewire.core.types import EndpointRequest, InvokeResult, StreamStart


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
