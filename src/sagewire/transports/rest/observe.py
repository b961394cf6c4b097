"""The REST bridge's side of call observation (sagewire.observability.calls): one record per
transcoded request, labelled by the route template (never the requested path), with the HTTP
status sent, the status code name and reason of a failure, and the body sizes."""

from __future__ import annotations

from aiohttp import web

from sagewire.observability.calls import Call, Observer, current
from sagewire.transports.rest.routes import Binding

# What an access record says of a request whose client went away before the answer
# (nginx's convention; no status was sent).
CLIENT_CLOSED = 499


# Where the security middleware (transports.rest.security) leaves the authenticated caller's
# principal for the call record, which opens after it (in the handler, once the route is known).
PRINCIPAL = web.RequestKey("sagewire.principal", str)


def open_call(
    observer: Observer, service: str, method: str, request: web.Request, route: str
) -> Call | None:
    """The record of `request`, transcoded to `service`'s `method` on the route template
    `route` (None when observing is off)."""
    if not observer.enabled:
        return None
    call = observer.start_http(service, method, request.method, route)
    call.received = 1
    call.bytes_in = request.content_length or 0
    call.principal = request.get(PRINCIPAL, "")
    return call


def start(observer: Observer, binding: Binding, request: web.Request) -> Call | None:
    return open_call(
        observer, binding.service, binding.method.name, request, binding.template.source
    )


def failed(code: str, reason: str) -> None:
    """The current request failed with this status code name and ErrorInfo reason."""
    call = current()
    if call is not None:
        call.code, call.reason = code, reason


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
