"""UploadAsync over HTTP: `POST /v1/models/{model}:uploadAsync` with the input as the raw
request body, streamed to S3 as it arrives (never held whole in memory), then submitted with
InvokeEndpointAsync; the answer is an UploadAsyncResponse in proto3 JSON.

UploadAsync is client-streaming, so it has no `google.api.http` rule: an HTTP body is one
message to a transcoder. Here the body *is* the stream of chunks the gRPC client sends after
its header, and the header's fields travel as SageMaker's own InvokeEndpointAsync headers
(docs/sagemaker-wire.md): `Content-Type` (the input's type), `X-Amzn-SageMaker-Accept`,
`X-Amzn-SageMaker-Custom-Attributes`, `X-Amzn-SageMaker-Inference-Id`,
`X-Amzn-SageMaker-RequestTTLSeconds`, `X-Amzn-SageMaker-InvocationTimeoutSeconds`. (`Accept`
is the HTTP answer's type, JSON, so the model's is `X-Amzn-SageMaker-Accept`.) Route policy,
ranges, the input size limit, the idle timeout and the multipart upload are core.async_jobs'
and aws.s3_upload's: the body becomes the same UploadAsyncRequest stream (header, then one
chunk per piece received) and goes through the gRPC servicer's own UploadAsync body.

Memory: aiohttp reads the body through a bounded buffer (it stops reading the socket past its
high-water mark), each received piece goes straight into the part buffers of aws.s3_upload,
and nothing else holds the input; docs/rest.md records the measured RSS growth.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

from aiohttp import hdrs, web

from sagewire.core.errors import invalid_argument
from sagewire.core.job_results import not_configured
from sagewire.observability.calls import Observer
from sagewire.transports.grpc.async_jobs import AsyncJobsService
from sagewire.transports.grpc.observe import OFF
from sagewire.transports.rest import edge, transcode
from sagewire.transports.rest.context import RestContext, timeout_of
from sagewire.transports.rest.errors import JSON_TYPE
from sagewire.v1 import async_jobs_pb2

PATH = "/v1/models/{model}:uploadAsync"
PREFIX = "X-Amzn-SageMaker-"
ACCEPT_HEADER = f"{PREFIX}Accept"
CUSTOM_ATTRIBUTES_HEADER = f"{PREFIX}Custom-Attributes"
INFERENCE_ID_HEADER = f"{PREFIX}Inference-Id"
TTL_HEADER = f"{PREFIX}RequestTTLSeconds"
INVOCATION_TIMEOUT_HEADER = f"{PREFIX}InvocationTimeoutSeconds"
HEADERS = (
    ACCEPT_HEADER,
    CUSTOM_ATTRIBUTES_HEADER,
    INFERENCE_ID_HEADER,
    TTL_HEADER,
    INVOCATION_TIMEOUT_HEADER,
)
_KNOWN = {name.lower() for name in HEADERS}
_MAX_SECONDS = 2**32 - 1  # the proto fields are uint32


def _seconds(headers: Mapping[str, str], name: str) -> int:
    value = headers.get(name, "")
    if not value:
        return 0
    if not value.isascii() or not value.isdigit() or int(value) > _MAX_SECONDS:
        raise invalid_argument(name, f"must be a whole number of seconds; got {value!r}")
    return int(value)


def upload_header(request: web.Request) -> async_jobs_pb2.UploadAsyncHeader:
    """The UploadAsyncHeader the request's headers (and the path's model) describe."""
    for name in request.headers:
        lower = name.lower()
        if lower.startswith(PREFIX.lower()) and lower not in _KNOWN:
            raise invalid_argument(
                name, f"is not an InvokeEndpointAsync header (known: {', '.join(HEADERS)})"
            )
    headers = request.headers
    return async_jobs_pb2.UploadAsyncHeader(
        model=request.match_info["model"],
        content_type=headers.get(hdrs.CONTENT_TYPE, ""),
        accept=headers.get(ACCEPT_HEADER, ""),
        options=async_jobs_pb2.AsyncOptions(
            custom_attributes=headers.get(CUSTOM_ATTRIBUTES_HEADER, ""),
            inference_id=headers.get(INFERENCE_ID_HEADER, ""),
            request_ttl_seconds=_seconds(headers, TTL_HEADER),
            invocation_timeout_seconds=_seconds(headers, INVOCATION_TIMEOUT_HEADER),
        ),
    )


async def upload_messages(
    request: web.Request, header: async_jobs_pb2.UploadAsyncHeader
) -> AsyncIterator[async_jobs_pb2.UploadAsyncRequest]:
    """The gRPC client stream this request amounts to: the header, then each piece of the body
    as the socket delivered it (aiohttp holds at most its read buffer ahead of us)."""
    yield async_jobs_pb2.UploadAsyncRequest(header=header)
    async for chunk in request.content.iter_any():
        yield async_jobs_pb2.UploadAsyncRequest(chunk=chunk)


class UploadHandler:
    """The handler; `jobs` is None when async inference is not configured."""

    def __init__(self, jobs: AsyncJobsService | None) -> None:
        self._jobs = jobs

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self._jobs is None:
            raise not_configured()
        context = RestContext(request.headers.items(), timeout_of(request.headers))
        messages = upload_messages(request, upload_header(request))
        answer = await self._jobs.upload(messages, context)  # type: ignore[arg-type]
        return web.Response(body=transcode.dumps(transcode.to_json(answer)), content_type=JSON_TYPE)


def add_upload_routes(
    app: web.Application, jobs: AsyncJobsService | None, observer: Observer = OFF
) -> None:
    """Register `POST /v1/models/{model}:uploadAsync` (recorded as UploadAsync)."""
    app.router.add_post(PATH, edge.wrap(observer, "UploadAsync", PATH, UploadHandler(jobs).handle))
