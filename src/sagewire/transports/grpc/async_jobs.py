"""The async RPCs of InferenceService: convert the request, call core.async_jobs, convert the
result. InferenceServicer delegates SubmitAsync, UploadAsync, GetAsyncResult, WatchAsync and
ReadAsyncOutput here; the error edge there maps every domain error.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing

from google.protobuf import timestamp_pb2

from sagewire.core.async_jobs import AsyncJobs, IssuedJob
from sagewire.core.async_types import AsyncCall, JobState, JobStatus
from sagewire.core.content import is_json
from sagewire.core.errors import invalid_argument
from sagewire.core.job_results import JobResults
from sagewire.transports.grpc import convert
from sagewire.transports.grpc.edge import Ctx
from sagewire.v1 import async_jobs_pb2

_STATES = {
    JobState.PENDING: async_jobs_pb2.ASYNC_STATE_PENDING,
    JobState.COMPLETED: async_jobs_pb2.ASYNC_STATE_COMPLETED,
    JobState.FAILED: async_jobs_pb2.ASYNC_STATE_FAILED,
    JobState.EXPIRED: async_jobs_pb2.ASYNC_STATE_EXPIRED,
}


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def _call(
    model: str,
    content_type: str,
    accept: str,
    options: async_jobs_pb2.AsyncOptions,
    context: Ctx,
) -> AsyncCall:
    return AsyncCall(
        model=model,
        content_type=content_type,
        accept=accept,
        custom_attributes=options.custom_attributes,
        inference_id=options.inference_id,
        request_ttl_seconds=options.request_ttl_seconds,
        invocation_timeout_seconds=options.invocation_timeout_seconds,
        time_remaining_s=context.time_remaining(),
    )


def _job(issued: IssuedJob) -> async_jobs_pb2.AsyncJob:
    token = issued.token
    return async_jobs_pb2.AsyncJob(
        job_id=issued.job_id,
        inference_id=token.inference_id,
        model=token.model,
        submitted_at=_timestamp(token.submitted_at),
        expires_at=_timestamp(token.expires_at),
    )


async def _chunks(
    requests: AsyncIterator[async_jobs_pb2.UploadAsyncRequest],
) -> AsyncGenerator[bytes, None]:
    async for message in requests:
        if message.WhichOneof("kind") != "chunk":
            raise invalid_argument(
                "header", "only the first UploadAsync message may be a header; send chunks after it"
            )
        yield message.chunk


class AsyncJobsService:
    """Async inference for InferenceServicer; `json_limit` caps the parsed `json` view."""

    def __init__(self, jobs: AsyncJobs, results: JobResults, json_limit: int) -> None:
        self._jobs = jobs
        self._results = results
        self._json_limit = json_limit

    async def submit(
        self, request: async_jobs_pb2.SubmitAsyncRequest, context: Ctx
    ) -> async_jobs_pb2.SubmitAsyncResponse:
        kind = request.WhichOneof("input")
        content_type = request.content_type
        body: bytes | None = None
        if kind == "json":
            body = convert.value_to_json_bytes(request.json)
            content_type = content_type or convert.JSON_CONTENT_TYPE
        elif kind == "body":
            body = request.body
        call = _call(request.model, content_type, request.accept, request.options, context)
        issued = await self._jobs.submit(call, body=body, input_location=request.input_location)
        return async_jobs_pb2.SubmitAsyncResponse(job=_job(issued))

    async def upload(
        self, requests: AsyncIterator[async_jobs_pb2.UploadAsyncRequest], context: Ctx
    ) -> async_jobs_pb2.UploadAsyncResponse:
        first = await anext(aiter(requests), None)
        if first is None or first.WhichOneof("kind") != "header":
            raise invalid_argument(
                "header", "the first UploadAsync message must be a header naming the model"
            )
        header = first.header
        call = _call(header.model, header.content_type, header.accept, header.options, context)
        async with aclosing(_chunks(requests)) as chunks:
            issued, size = await self._jobs.upload(call, chunks)
        return async_jobs_pb2.UploadAsyncResponse(job=_job(issued), input_size=size)

    async def get_result(
        self, request: async_jobs_pb2.GetAsyncResultRequest, context: Ctx
    ) -> async_jobs_pb2.GetAsyncResultResponse:
        view = convert.response_view(request.view)
        result = await self._results.result(request.job_id)
        status = result.status
        response = async_jobs_pb2.GetAsyncResultResponse(
            state=_STATES[status.state],
            failure_reason=status.failure_reason,
            expires_at=_timestamp(result.expires_at),
        )
        if status.output is not None:
            response.content_type = status.output.content_type
            response.output_size = status.output.size
            if result.body is None:
                response.output_not_inlined = True
            else:
                json_type = is_json(status.output.content_type)
                convert.set_answer(response, result.body, json_type, view, self._json_limit)
        return response

    async def watch(
        self, request: async_jobs_pb2.WatchAsyncRequest, context: Ctx
    ) -> AsyncGenerator[async_jobs_pb2.WatchAsyncResponse, None]:
        async with aclosing(self._results.watch(request.job_id)) as updates:
            async for status in updates:
                yield _update(status)

    async def read_output(
        self, request: async_jobs_pb2.ReadAsyncOutputRequest, context: Ctx
    ) -> AsyncGenerator[async_jobs_pb2.ReadAsyncOutputResponse, None]:
        async with self._results.open_output(request.job_id) as stream:
            first = True
            async for chunk in stream.chunks:
                message = async_jobs_pb2.ReadAsyncOutputResponse(chunk=chunk)
                if first:
                    message.content_type = stream.info.content_type
                    message.total_size = stream.info.size
                    first = False
                yield message
            if first:  # an empty output still tells its type and size
                yield async_jobs_pb2.ReadAsyncOutputResponse(
                    content_type=stream.info.content_type, total_size=0
                )


def _update(status: JobStatus) -> async_jobs_pb2.WatchAsyncResponse:
    return async_jobs_pb2.WatchAsyncResponse(
        state=_STATES[status.state],
        observed_at=_timestamp(status.observed_at),
        failure_reason=status.failure_reason,
    )
