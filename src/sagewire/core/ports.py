"""What the core needs from SageMaker, as a Protocol the AWS adapter implements.

The core depends on this shape, not on aioboto3, so its logic reads without AWS details.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from sagewire.core.async_types import (
    AsyncAccepted,
    AsyncEndpointRequest,
    ObjectInfo,
    ObjectStream,
    S3Location,
)
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

    # The result (a stream's `start`) names `request.endpoint` in `endpoint` (else
    # sagewire.core.resilience copies it to say which endpoint answered).
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


class AsyncInferencePort(Protocol):
    """SageMaker's InvokeEndpointAsync (a port of its own so realtime fakes need not grow)."""

    async def invoke_endpoint_async(self, request: AsyncEndpointRequest) -> AsyncAccepted: ...


class ObjectStorePort(Protocol):
    """The S3 operations async inference uses. Missing objects are None, not errors; every
    other failure is raised as SagewireError."""

    async def put(self, location: S3Location, body: bytes, content_type: str) -> None: ...

    async def put_stream(
        self, location: S3Location, chunks: AsyncIterator[bytes], content_type: str
    ) -> int:
        """Write `chunks` as one object without holding more than a few parts in memory;
        return its size. On any failure (including a failing `chunks`) nothing is left
        behind: a started multipart upload is aborted."""
        ...

    async def head(self, location: S3Location) -> ObjectInfo | None: ...

    async def read(self, location: S3Location, limit: int) -> bytes | None:
        """The object's first `limit` bytes (limit ≥ 1), or None when it does not exist."""
        ...

    def open(self, location: S3Location) -> AbstractAsyncContextManager[ObjectStream | None]:
        """Stream the object's bytes straight from S3 (None when it does not exist)."""
        ...


class CompletionSignal(Protocol):
    """Wakes job watchers early when a job may have finished (e.g. an SNS/SQS notification).

    Watchers always confirm the state in S3, so a signal only shortens the wait; a missed or
    duplicated notification is harmless.
    """

    async def wait(self, inference_id: str, timeout_s: float) -> None:
        """Return when `inference_id` may have changed state, or after `timeout_s`."""
        ...


class RouteGuard(Protocol):
    """Who may use what (sagewire.security.guard): asked by the route table for every route a
    call resolves and every route it lists, and by async jobs for the caller's binding."""

    def admit(self, route: str) -> None:
        """Raise PERMISSION_DENIED or RESOURCE_EXHAUSTED unless the current caller may call
        `route` now."""

    def visible(self, route: str) -> bool:
        """May the current caller see `route` in listings and hints?"""
        ...

    def owner(self) -> str:
        """The current caller's binding for the job ids it is issued ("" without auth)."""
        ...


class OpenGuard:
    """The RouteGuard of a server without authentication: everything is open to everyone."""

    def admit(self, route: str) -> None:
        return None

    def visible(self, route: str) -> bool:
        return True

    def owner(self) -> str:
        return ""
