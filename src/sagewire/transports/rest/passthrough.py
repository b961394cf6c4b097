"""Raw model passthrough: SageMaker's container contract over the REST listener.

`POST /v1/models/{model}/invocations` sends the request body to the model as-is and answers
with the model's own bytes and content type (InvokeEndpoint); `POST
/v1/models/{model}/invocations-response-stream` relays the model's bytes as each PayloadPart
arrives (InvokeEndpointWithResponseStream), one HTTP chunk per part, nothing read ahead.

Headers in: `Content-Type` and `Accept` as SageMaker takes them, and the `X-Amzn-SageMaker-*`
option headers of InvokeEndpoint (docs/sagemaker-wire.md), each one subject to the route's
`allow` policy and SageMaker's limits exactly as the `options` of a gRPC call (the core checks
both: Gateway.invoke / open_stream). Headers out: the model's Content-Type and SageMaker's
response headers (invoked variant, custom attributes, session ids).

Both run behind transports.rest.edge (access log, metrics, span, error mapping). A failure
before the first byte is an ordinary error answer (google.rpc.Status JSON). A failure
after the stream started cannot change the 200 already sent, and raw bytes have no room for an
error event, so the connection is closed without the final chunk: every HTTP client reports a
truncated body (curl exit 18, aiohttp ClientPayloadError) instead of a silent, cut 200.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from aiohttp import hdrs, web

from sagewire.core.errors import SagewireError, invalid_argument
from sagewire.core.gateway import Gateway
from sagewire.core.types import InvocationOptions, InvokeCall, InvokeResult
from sagewire.core.validation import validate_body_size
from sagewire.observability.calls import Observer
from sagewire.transports.grpc.observe import OFF
from sagewire.transports.rest import edge
from sagewire.transports.rest.context import timeout_of

log = logging.getLogger(__name__)

PREFIX = "X-Amzn-SageMaker-"
# InvokeEndpoint's option headers → InvocationOptions fields (SageMaker Runtime API reference).
OPTION_HEADERS: Mapping[str, str] = {
    f"{PREFIX}Custom-Attributes": "custom_attributes",
    f"{PREFIX}Target-Variant": "target_variant",
    f"{PREFIX}Target-Model": "target_model",
    f"{PREFIX}Inference-Component": "inference_component",
    f"{PREFIX}Target-Container-Hostname": "target_container_hostname",
    f"{PREFIX}Inference-Id": "inference_id",
    f"{PREFIX}Session-Id": "session_id",
    f"{PREFIX}Enable-Explanations": "enable_explanations",
}
_BY_LOWER = {name.lower(): field for name, field in OPTION_HEADERS.items()}
# SageMaker's response headers, relayed as it sends them.
VARIANT_HEADER = "X-Amzn-Invoked-Production-Variant"
# sagewire's own: the SageMaker endpoint that answered, the route's or a fallback
# (docs/resilience.md); the same name as InvokeStream's initial metadata.
ENDPOINT_HEADER = "sagewire-endpoint-name"
_RESULT_HEADERS = (
    (VARIANT_HEADER, "invoked_variant"),
    (ENDPOINT_HEADER, "endpoint"),
    (f"{PREFIX}Custom-Attributes", "custom_attributes"),
    (f"{PREFIX}New-Session-Id", "new_session_id"),
    (f"{PREFIX}Closed-Session-Id", "closed_session_id"),
)
OCTET_STREAM = "application/octet-stream"
_READ_CHUNK = 64 * 1024


def options_from_headers(headers: Mapping[str, str]) -> InvocationOptions:
    """The InvocationOptions the `X-Amzn-SageMaker-*` headers set. An `X-Amzn-SageMaker-*`
    header that is not an InvokeEndpoint option is INVALID_ARGUMENT naming it, so a typo is
    never silently dropped."""
    values: dict[str, str] = {}
    for name, value in headers.items():
        lower = name.lower()
        if not lower.startswith(PREFIX.lower()):
            continue
        field = _BY_LOWER.get(lower)
        if field is None:
            known = ", ".join(OPTION_HEADERS)
            raise invalid_argument(name, f"is not an InvokeEndpoint option header (known: {known})")
        values[field] = value
    return InvocationOptions(**values)


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request body, refused past `limit` bytes (SageMaker's request limit) before more
    than `limit` + one read chunk is held: by Content-Length up front, else while reading."""
    if request.content_length is not None:
        validate_body_size(request.content_length, limit)
    parts: list[bytes] = []
    size = 0
    while chunk := await request.content.read(_READ_CHUNK):
        size += len(chunk)
        validate_body_size(size, limit)
        parts.append(chunk)
    return b"".join(parts)


def _content_type(request: web.Request) -> str:
    # The header as sent (parameters included); curl's default form type is no model's type,
    # but forwarding it unchanged is what SageMaker itself does.
    return request.headers.get(hdrs.CONTENT_TYPE, "")


async def _call(request: web.Request, limit: int) -> InvokeCall:
    options = options_from_headers(request.headers)
    accept = request.headers.get(hdrs.ACCEPT, "")
    return InvokeCall(
        model=request.match_info["model"],
        body=await read_body(request, limit),
        content_type=_content_type(request),
        # `*/*` is every client's default, not a wish: leave the route's default in place.
        accept="" if accept.strip() == "*/*" else accept,
        options=options,
        time_remaining_s=timeout_of(request.headers),
    )


def _result_headers(result: InvokeResult) -> dict[str, str]:
    headers: dict[str, str] = {hdrs.CONTENT_TYPE: result.content_type or OCTET_STREAM}
    for header, attribute in _RESULT_HEADERS:
        value = getattr(result, attribute)
        if value:
            headers[header] = value
    return headers


class Passthrough:
    """The two passthrough handlers over one Gateway; `max_body_bytes` is SageMaker's limit."""

    def __init__(self, gateway: Gateway, max_body_bytes: int) -> None:
        self._gateway = gateway
        self._limit = max_body_bytes

    async def invocations(self, request: web.Request) -> web.StreamResponse:
        result = await self._gateway.invoke(await _call(request, self._limit))
        return web.Response(body=result.body, headers=_result_headers(result))

    async def invocations_stream(self, request: web.Request) -> web.StreamResponse:
        response: web.StreamResponse | None = None
        try:
            call = await _call(request, self._limit)
            async with self._gateway.open_stream(call) as stream:
                headers: dict[str, str] = {
                    hdrs.CONTENT_TYPE: stream.start.content_type or OCTET_STREAM
                }
                if stream.start.invoked_variant:
                    headers[VARIANT_HEADER] = stream.start.invoked_variant
                if stream.start.endpoint:
                    headers[ENDPOINT_HEADER] = stream.start.endpoint
                response = web.StreamResponse(headers=headers)
                response.enable_chunked_encoding()
                await response.prepare(request)
                async for piece in stream.pieces:
                    await response.write(piece)  # one chunk per part, written at once
        except SagewireError as error:
            if response is None:
                raise  # nothing sent yet: an ordinary error answer (the edge)
            edge.failed(error)
            log.info(
                "invocations-response-stream -> %s (%s) after data; closing the connection "
                "without the final chunk",
                error.kind.name,
                error.reason,
            )
            raise StreamBroken(error.reason) from None
        await response.write_eof()
        return response


class StreamBroken(ConnectionError):
    """Raised out of a handler whose response already started: aiohttp then closes the
    connection without the terminating chunk, so the client sees a truncated body."""


INVOCATIONS = "/v1/models/{model}/invocations"
RESPONSE_STREAM = "/v1/models/{model}/invocations-response-stream"


def add_passthrough_routes(
    app: web.Application, gateway: Gateway, max_body_bytes: int, observer: Observer = OFF
) -> None:
    """Register `POST /v1/models/{model}/invocations` and `…/invocations-response-stream`
    (recorded as Invoke and InvokeStream, on their own route templates)."""
    handlers = Passthrough(gateway, max_body_bytes)
    app.router.add_post(
        INVOCATIONS, edge.wrap(observer, "Invoke", INVOCATIONS, handlers.invocations)
    )
    app.router.add_post(
        RESPONSE_STREAM,
        edge.wrap(observer, "InvokeStream", RESPONSE_STREAM, handlers.invocations_stream),
    )
