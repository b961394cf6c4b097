"""The REST bridge's side of call observation (sagewire.observability.calls): one record per
transcoded request, labelled by the route template (never the requested path), with the HTTP
status sent, the status code name and reason of a failure, and the body sizes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from sagewire.observability.calls import Call, Observer, current, failed

__all__ = ["OBSERVER", "OWN_ROUTES", "access_logged", "failed", "finish", "own_routes", "start"]
from sagewire.transports.rest.routes import Binding

_INFERENCE = "sagewire.v1.InferenceService"
# The bridge's own routes (not transcoded from an http rule) that are calls, by path template:
# the RPC each one performs. Transcoded requests are observed by RpcHandler itself.
OWN_ROUTES: dict[str, tuple[str, str]] = {
    "/v1/models/{model}/invocations": (_INFERENCE, "Invoke"),
    "/v1/models/{model}/invocations-response-stream": (_INFERENCE, "InvokeStream"),
    "/v1/models/{model}:converse": (_INFERENCE, "Converse"),
    "/v1/models/{model}:uploadAsync": (_INFERENCE, "UploadAsync"),
}
OBSERVER = web.AppKey("observer", Observer)

type Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def own_routes(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Observe requests to OWN_ROUTES: each error answer names its failure through
    `errors.error_response`, which reports to the current call."""
    resource = request.match_info.route.resource
    rpc = OWN_ROUTES.get(resource.canonical) if resource is not None else None
    observer = request.app.get(OBSERVER)
    if rpc is None or observer is None or not observer.enabled:
        return await handler(request)
    call = observer.start_http(rpc[0], rpc[1], request.method, resource.canonical)  # type: ignore[union-attr]
    call.received = 1
    call.bytes_in = request.content_length or 0
    response: web.StreamResponse | None = None
    try:
        response = await handler(request)
    finally:
        finish(call, response)
    return response


# What an access record says of a request whose client went away before the answer
# (nginx's convention; no status was sent).
CLIENT_CLOSED = 499


def start(observer: Observer, binding: Binding, request: web.Request) -> Call | None:
    if not observer.enabled:
        return None
    call = observer.start_http(
        binding.service, binding.method.name, request.method, binding.template.source
    )
    call.received = 1
    call.bytes_in = request.content_length or 0
    return call


def access_logged() -> bool:
    """Whether the access record will report the current request (so no separate line)."""
    call = current()
    return call is not None and call.observer.access


def finish(call: Call | None, response: web.StreamResponse | None) -> None:
    if call is None:
        return
    if response is None:
        call.code, call.http_status = "CANCELLED", CLIENT_CLOSED
    else:
        call.http_status = response.status
        if isinstance(response, web.Response):
            call.bytes_out = response.content_length or 0
        else:
            call.bytes_out = response.body_length
        call.sent = 1
    call.observer.finish(call)
