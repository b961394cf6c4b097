"""The REST bridge's side of call observation (sagewire.observability.calls): one record per
transcoded request, labelled by the route template (never the requested path), with the HTTP
status sent, the status code name and reason of a failure, and the body sizes. Requests the
security layer refuses before any handler runs (401, 403, quota) are recorded too (`refused`),
as the RPC their route amounts to, like gRPC's UNAUTHENTICATED and PERMISSION_DENIED calls."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from sagewire.observability.calls import Call, Observer, current
from sagewire.transports.rest.routes import Binding

# What an access record says of a request whose client went away before the answer
# (nginx's convention; no status was sent).
CLIENT_CLOSED = 499


# Where the security middleware (transports.rest.security) leaves the authenticated caller's
# principal for the call record, which opens after it (in the handler, once the route is known).
PRINCIPAL = web.RequestKey("sagewire.principal", str)
# time.perf_counter() when the security layer took the request (its record's start).
STARTED = web.RequestKey("sagewire.started", float)


# Set on a route's handler by its edge (transports.rest.edge): (service, method, route template).
RPC_ATTRIBUTE = "__sagewire_rpc__"


def name_rpc(handler: Callable[..., Any], service: str, method: str, route: str) -> None:
    """Say which RPC `handler`'s route amounts to, for requests refused before it runs."""
    setattr(handler, RPC_ATTRIBUTE, (service, method, route))


def rpc_of(request: web.Request) -> tuple[str, str, str]:
    """(service, method, route template) of the RPC `request` amounts to: named by its route's
    edge, or by the transcoding router (its handler's `rpc_of`); a route of no RPC (the OpenAPI
    document) gives its own template, and a path no route matches ("", "", "") (never the
    requested path: label values stay bounded)."""
    handler = request.match_info.handler
    named = getattr(handler, RPC_ATTRIBUTE, None)
    if named is not None:
        return named  # type: ignore[no-any-return]
    describe = getattr(getattr(handler, "__self__", None), "rpc_of", None)
    if describe is not None:  # the transcoding catch-all
        found = describe(request)
        return found if found is not None else ("", "", "")
    resource = request.match_info.route.resource  # e.g. /v1/openapi.json
    return "", "", resource.canonical if resource is not None else ""


def refused(
    observer: Observer, request: web.Request, response: web.StreamResponse, code: str, reason: str
) -> None:
    """Record `request`, refused with `response` (status `code`, ErrorInfo `reason`) before a
    handler opened its record."""
    if not observer.enabled:
        return
    service, method, route = rpc_of(request)
    call = open_call(observer, service, method, request, route)
    if call is not None:
        call.code, call.reason = code, reason
        finish(call, response)


def open_call(
    observer: Observer, service: str, method: str, request: web.Request, route: str
) -> Call | None:
    """The record of `request`, transcoded to `service`'s `method` on the route template
    `route` (None when observing is off)."""
    if not observer.enabled:
        return None
    call = observer.start_http(service, method, request.method, route)
    started = request.get(STARTED)
    if started is not None:  # the security layer's time counts (transports.rest.security)
        call.started = started
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
