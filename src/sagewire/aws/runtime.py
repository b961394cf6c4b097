"""SageMaker Runtime: one shared client per process, requests built from domain types, every
failure translated by sagewire.aws.errors.

InvokeEndpoint and InvokeEndpointWithResponseStream go by the lean path (sagewire.aws.lean)
when aws.client = "lean", else by aioboto3; InvokeEndpointAsync always by aioboto3. Both paths
give the same results and errors (tests/integration run the runtime suites over both).

Cancelling a call (caller gone, deadline hit) cancels the awaiting task; aiohttp then drops the
HTTP connection, so SageMaker sees the request end and no stream is left running upstream.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Self

from botocore.exceptions import ClientError
from botocore.retries.quota import RetryQuota

from sagewire.aws.client import SharedClient
from sagewire.aws.error_table import Phase
from sagewire.aws.errors import AWS_FAILURES, map_aws_error
from sagewire.aws.eventstream import Frame, FrameDecoder
from sagewire.aws.instrumented import ObservedCalls
from sagewire.aws.lean import INVOKE, INVOKE_STREAM, Answer, CallFailed, LeanSender, open_lean
from sagewire.config.operations import PARAMETERS
from sagewire.config.settings import AwsSettings
from sagewire.core.async_types import AsyncAccepted, AsyncEndpointRequest
from sagewire.core.types import EndpointRequest, InvokeResult, StreamStart

log = logging.getLogger(__name__)


def _params(request: EndpointRequest) -> dict[str, Any]:
    """botocore's parameters. The core has refused every option the operation does not take
    (sagewire.config.operations), so nothing is dropped here: botocore would refuse it."""
    params: dict[str, Any] = {"EndpointName": request.endpoint, "Body": request.body}
    if request.content_type:
        params["ContentType"] = request.content_type
    if request.accept:
        params["Accept"] = request.accept
    for name in request.options.set_fields():
        params[PARAMETERS[name]] = getattr(request.options, name)
    return params


def _stream_exception(message: Frame) -> ClientError:
    """An exception event as botocore would raise it, but keeping the payload's ErrorCode
    (botocore's own event parser drops it, and it decides the gRPC status)."""
    kind = message.headers.get(":exception-type") or message.headers.get(":error-code", "")
    try:
        payload = json.loads(message.payload or b"{}")
    except ValueError:
        payload = {}
    response: dict[str, Any] = {
        "Error": {
            "Code": str(kind),
            "Message": str(
                payload.get("Message")
                or payload.get("message")
                or message.headers.get(":error-message", "")
            ),
        },
        "ErrorCode": str(payload.get("ErrorCode", "")),
    }
    return ClientError(response, "InvokeEndpointWithResponseStream")


@dataclass
class _ResponseStream:
    start: StreamStart
    _content: Any  # the aiohttp StreamReader of the response body
    _endpoint: str

    async def parts(self) -> AsyncIterator[bytes]:
        """Decode the event stream straight off the HTTP body (sagewire.aws.eventstream).

        The aiohttp response is botocore's EventStream `_raw_stream` (or the lean path's
        response); reading it directly keeps ModelStreamError.ErrorCode and skips a per-event
        shape parse on the hot path. When the connection fails, the whole parts that arrived
        before it are yielded first.
        """
        frames = FrameDecoder()
        content = self._content
        try:
            async for chunk, _ in content.iter_chunks():
                payloads, raised = _events(frames.feed(chunk))
                for payload in payloads:
                    yield payload
                if raised is not None:
                    raise raised
        except AWS_FAILURES as exc:
            failure = map_aws_error(exc, self._endpoint, Phase.RECEIVING)
            if not isinstance(exc, ClientError) and (received := _buffered(content)):
                try:
                    payloads, raised = _events(frames.feed(received))
                except Exception:  # a torn frame: the connection's failure is the news
                    payloads, raised = [], None
                for payload in payloads:
                    yield payload
                if raised is not None:
                    failure = map_aws_error(raised, self._endpoint, Phase.RECEIVING)
            raise failure from exc


def _events(frames: list[Frame]) -> tuple[list[bytes], ClientError | None]:
    """The PayloadPart bytes among `frames`, up to an exception event (returned as botocore
    would raise it)."""
    payloads: list[bytes] = []
    for message in frames:
        kind = message.headers.get(":message-type")
        if kind == "event":
            if message.headers.get(":event-type") == "PayloadPart" and message.payload:
                payloads.append(message.payload)
        elif kind in ("exception", "error"):
            return payloads, _stream_exception(message)
    return payloads, None


def _buffered(content: Any) -> bytes:
    """What aiohttp received before the connection failed and has not handed out yet.

    aiohttp's StreamReader raises a stored connection failure before it returns data it already
    buffered (aiohttp/streams.py, readchunk/readany check `_exception` first), so the bytes
    that arrived with the failure would be lost: they are taken from its buffer directly.
    """
    take = getattr(content, "_read_nowait", None)
    if take is None:
        return b""
    try:
        return bytes(take(-1))
    except Exception:
        return b""


def _result(response: dict[str, Any], data: bytes, endpoint: str) -> InvokeResult:
    """The domain result; `endpoint` is the SageMaker endpoint the request went to (so the
    resilience layer need not copy the result to name it)."""
    return InvokeResult(
        body=data,
        content_type=response.get("ContentType", ""),
        invoked_variant=response.get("InvokedProductionVariant", ""),
        custom_attributes=response.get("CustomAttributes", ""),
        new_session_id=response.get("NewSessionId", ""),
        closed_session_id=response.get("ClosedSessionId", ""),
        endpoint=endpoint,
    )


def _start(response: dict[str, Any], endpoint: str) -> StreamStart:
    """The stream's start; `endpoint` as in `_result`."""
    return StreamStart(
        content_type=response.get("ContentType", ""),
        invoked_variant=response.get("InvokedProductionVariant", ""),
        endpoint=endpoint,
    )


class SageMakerRuntime(SharedClient):
    """The shared sagemaker-runtime client. Use as an async context manager."""

    def __init__(self, settings: AwsSettings) -> None:
        super().__init__("sagemaker-runtime", settings.runtime_endpoint_url, settings)
        self._lean: LeanSender | None = None
        self._observed: ObservedCalls | None = None
        if settings.client == "lean":
            self._budget = RetryQuota()  # one budget for both paths

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        if self._settings.client == "lean":
            self._lean, self._observed = await open_lean(
                self._stack, self._settings, self._client.meta, self._session, self._budget
            )
        return self

    async def invoke_endpoint(self, request: EndpointRequest) -> InvokeResult:
        if self._lean is not None:
            return await self._lean_invoke(request)
        try:
            response = await self._client.invoke_endpoint(**_params(request))
        except AWS_FAILURES as exc:
            raise map_aws_error(exc, request.endpoint) from exc
        try:
            async with response["Body"] as body:
                data = await body.read()
        except AWS_FAILURES as exc:
            raise map_aws_error(exc, request.endpoint, Phase.RECEIVING) from exc
        return _result(response, data, request.endpoint)

    @asynccontextmanager
    async def invoke_endpoint_stream(
        self, request: EndpointRequest
    ) -> AsyncIterator[_ResponseStream]:
        if self._lean is not None:
            async with self._lean_stream(request) as stream:
                yield stream
            return
        try:
            response = await self._client.invoke_endpoint_with_response_stream(**_params(request))
        except AWS_FAILURES as exc:
            raise map_aws_error(exc, request.endpoint) from exc
        body = response["Body"]
        try:
            start = _start(response, request.endpoint)
            yield _ResponseStream(start, body._raw_stream.content, request.endpoint)
        finally:
            # Closing drops the HTTP connection: on early exit the model stops streaming.
            with contextlib.suppress(Exception):
                body.close()

    async def _lean_send(self, operation: str, params: dict[str, Any], endpoint: str) -> Answer:
        assert self._lean is not None
        assert self._observed is not None
        with self._observed.call(operation, params) as observed:
            try:
                answer = await self._lean.send(operation, params)
            except CallFailed as failed:
                observed.sends = failed.sends
                observed.response = getattr(failed.error, "response", None)
                raise map_aws_error(failed.error, endpoint) from failed.error
            observed.sends = answer.sends
            observed.response = answer.metadata()
        return answer

    async def _lean_invoke(self, request: EndpointRequest) -> InvokeResult:
        assert self._lean is not None
        params = _params(request)
        answer = await self._lean_send(INVOKE, params, request.endpoint)
        try:
            data = await answer.raw.read()
        except AWS_FAILURES as exc:
            raise map_aws_error(exc, request.endpoint, Phase.RECEIVING) from exc
        finally:
            answer.raw.close()
        return _result(self._lean.outputs(INVOKE, answer.headers), data, request.endpoint)

    @asynccontextmanager
    async def _lean_stream(self, request: EndpointRequest) -> AsyncIterator[_ResponseStream]:
        assert self._lean is not None
        answer = await self._lean_send(INVOKE_STREAM, _params(request), request.endpoint)
        raw = answer.raw
        try:
            start = _start(self._lean.outputs(INVOKE_STREAM, answer.headers), request.endpoint)
            yield _ResponseStream(start, raw.content, request.endpoint)
        finally:
            with contextlib.suppress(Exception):
                raw.close()

    async def invoke_endpoint_async(self, request: AsyncEndpointRequest) -> AsyncAccepted:
        params: dict[str, Any] = {
            "EndpointName": request.endpoint,
            "InputLocation": request.input_location,
            "InferenceId": request.inference_id,
            "RequestTTLSeconds": request.request_ttl_seconds,
            "InvocationTimeoutSeconds": request.invocation_timeout_seconds,
        }
        optional = {
            "ContentType": request.content_type,
            "Accept": request.accept,
            "CustomAttributes": request.custom_attributes,
        }
        params.update({name: value for name, value in optional.items() if value})
        try:
            response = await self._client.invoke_endpoint_async(**params)
        except AWS_FAILURES as exc:
            raise map_aws_error(exc, request.endpoint) from exc
        return AsyncAccepted(
            inference_id=str(response.get("InferenceId", "")),
            output_location=str(response.get("OutputLocation", "")),
            failure_location=str(response.get("FailureLocation", "")),
        )
