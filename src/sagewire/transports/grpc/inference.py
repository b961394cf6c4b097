"""InferenceService: each method converts the request, calls the core, converts the result."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing

from sagewire.core.content import is_json
from sagewire.core.errors import ErrorKind, SagewireError
from sagewire.core.gateway import Gateway
from sagewire.core.types import InvokeCall, InvokeResult
from sagewire.security.guard import Security
from sagewire.transports.grpc import converse, convert, edge, observe
from sagewire.transports.grpc.async_jobs import AsyncJobsService
from sagewire.transports.grpc.edge import Ctx
from sagewire.v1 import (
    async_jobs_pb2,
    converse_pb2,
    inference_service_pb2_grpc,
    invoke_pb2,
)

# Initial metadata of InvokeStream (see invoke.proto).
META_CONTENT_TYPE = "sagewire-content-type"
META_VARIANT = "sagewire-invoked-production-variant"
# The SageMaker endpoint that answered: the route's own or a fallback (docs/resilience.md).
META_ENDPOINT = "sagewire-endpoint-name"


def _call(
    request: invoke_pb2.InvokeRequest | invoke_pb2.InvokeStreamRequest, context: Ctx
) -> InvokeCall:
    body, content_type = convert.payload(request)
    framing = (
        convert.framing_from_proto(request.framing)
        if isinstance(request, invoke_pb2.InvokeStreamRequest)
        else None
    )
    return InvokeCall(
        model=request.model,
        body=body,
        content_type=content_type,
        accept=request.accept,
        options=convert.options_from_proto(request.options),
        time_remaining_s=context.time_remaining(),
        framing=framing,
    )


async def _send_headers(context: Ctx, metadata: tuple[tuple[str, str], ...]) -> None:
    await context.send_initial_metadata(metadata)


async def _headers_and_first(
    context: Ctx, metadata: tuple[tuple[str, str], ...], pieces: AsyncIterator[bytes]
) -> bytes | None:
    """Send the stream's initial metadata and read its first piece (None: there is none).

    The send starts at once (the caller sees the headers even if no part ever comes) but is
    awaited only once the first piece is read: the completion of gRPC's send (a trip through
    its completion queue, ~60 µs) overlaps the upstream read instead of delaying the first
    part. It is always settled before this returns or raises, so nothing else is sent before
    it and gRPC never sees a second initial-metadata operation.
    """
    loop = asyncio.get_running_loop()
    sent = asyncio.Task(_send_headers(context, metadata), loop=loop, eager_start=True)
    try:
        first = await anext(pieces, None)
    except BaseException:
        await asyncio.wait([sent])  # settled; the read's failure is the one to report
        if not sent.cancelled():
            sent.exception()  # retrieved: asyncio would log it as never retrieved
        raise
    await sent
    return first


class InferenceServicer(inference_service_pb2_grpc.InferenceServiceServicer):
    observer = observe.OFF  # the server sets its own
    SERVICE = "sagewire.v1.InferenceService"
    # Set by the server: the edge authenticates and authorises through it.
    security: Security | None = None

    def __init__(
        self,
        gateway: Gateway,
        json_view_limit: int,
        async_jobs: AsyncJobsService | None = None,
    ) -> None:
        self._gateway = gateway
        self._json_limit = json_view_limit
        self._async_jobs = async_jobs

    @property
    def json_limit(self) -> int:
        """server.max_json_view_bytes: answers above it get no `json` view."""
        return self._json_limit

    async def invoke(self, request: invoke_pb2.InvokeRequest, context: Ctx) -> InvokeResult:
        """Invoke's call to the core, its answer not yet converted (the REST bridge converts it
        to JSON itself: transports.rest.invoke_json)."""
        return await self._gateway.invoke(_call(request, context))

    def invoke_response(
        self, result: InvokeResult, view: convert.View = convert.FULL
    ) -> invoke_pb2.InvokeResponse:
        return convert.invoke_response(result, is_json(result.content_type), self._json_limit, view)

    @edge.unary
    async def Invoke(
        self, request: invoke_pb2.InvokeRequest, context: Ctx
    ) -> invoke_pb2.InvokeResponse:
        view = convert.response_view(request.view)
        return self.invoke_response(await self.invoke(request, context), view)

    @edge.streaming
    async def InvokeStream(
        self, request: invoke_pb2.InvokeStreamRequest, context: Ctx
    ) -> AsyncIterator[invoke_pb2.InvokeStreamResponse]:
        view = convert.response_view(request.view)
        async with self._gateway.open_stream(_call(request, context)) as stream:
            start = stream.start
            metadata = (
                (META_CONTENT_TYPE, start.content_type),
                (META_VARIANT, start.invoked_variant),
                (META_ENDPOINT, start.endpoint),
            )
            records = stream.framing.records
            limit = self._json_limit
            pieces = aiter(stream.pieces)
            piece = await _headers_and_first(context, metadata, pieces)
            index = 0
            while piece is not None:
                message = invoke_pb2.InvokeStreamResponse(index=index)
                convert.set_answer(message, piece, records, view, limit)
                yield message
                index += 1
                piece = await anext(pieces, None)

    # A coroutine writing with context.write rather than a generator, so the core bounds the
    # whole session (maximum duration) even while a write waits on a slow reader.
    @edge.unary
    async def Converse(  # type: ignore[override]
        self, request_iterator: AsyncIterator[converse_pb2.ConverseRequest], context: Ctx
    ) -> None:
        await converse.serve(self._gateway, request_iterator, context, self._json_limit)

    # Async inference: thin delegations to transports.grpc.async_jobs.
    def _async(self) -> AsyncJobsService:
        if self._async_jobs is None:
            raise SagewireError(
                message="async inference is not configured on this server: it has no route "
                "of mode async and no async_jobs.job_id_keys",
                kind=ErrorKind.FAILED_PRECONDITION,
                reason="ASYNC_NOT_CONFIGURED",
            )
        return self._async_jobs

    @edge.unary
    async def SubmitAsync(
        self, request: async_jobs_pb2.SubmitAsyncRequest, context: Ctx
    ) -> async_jobs_pb2.SubmitAsyncResponse:
        return await self._async().submit(request, context)

    @edge.unary
    async def UploadAsync(
        self, request_iterator: AsyncIterator[async_jobs_pb2.UploadAsyncRequest], context: Ctx
    ) -> async_jobs_pb2.UploadAsyncResponse:
        return await self._async().upload(request_iterator, context)

    @edge.unary
    async def GetAsyncResult(
        self, request: async_jobs_pb2.GetAsyncResultRequest, context: Ctx
    ) -> async_jobs_pb2.GetAsyncResultResponse:
        return await self._async().get_result(request, context)

    @edge.streaming
    async def WatchAsync(
        self, request: async_jobs_pb2.WatchAsyncRequest, context: Ctx
    ) -> AsyncIterator[async_jobs_pb2.WatchAsyncResponse]:
        async with aclosing(self._async().watch(request, context)) as updates:
            async for update in updates:
                yield update

    @edge.streaming
    async def ReadAsyncOutput(
        self, request: async_jobs_pb2.ReadAsyncOutputRequest, context: Ctx
    ) -> AsyncIterator[async_jobs_pb2.ReadAsyncOutputResponse]:
        async with aclosing(self._async().read_output(request, context)) as chunks:
            async for chunk in chunks:
                yield chunk
