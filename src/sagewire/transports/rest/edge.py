"""The edge of the REST routes that are not transcoding (raw passthrough, UploadAsync, Converse
over a WebSocket): what transports.rest.rpc does for transcoded RPCs, as a wrapper.

Each request gets its call record (access log line and `http_server_request_duration_seconds`,
labelled by the route template, never the requested path) and its trace span, named for the RPC
it amounts to. A SagewireError raised by the handler becomes its Status JSON answer (one error
table); anything unexpected becomes INTERNAL with an incident id in the log, never a stack
trace to the caller. A ConnectionError is let through: the client is gone, or the handler cuts
a response that already started (passthrough.StreamBroken), having recorded why with `failed`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from sagewire import telemetry
from sagewire.core.errors import ErrorKind, SagewireError
from sagewire.observability.calls import Observer, traced
from sagewire.transports.grpc.edge import error_code_name
from sagewire.transports.rest import observe
from sagewire.transports.rest.errors import error_response

log = logging.getLogger("sagewire.access")

type Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

INFERENCE = "sagewire.v1.InferenceService"


def failed(error: SagewireError) -> None:
    """Record on the current call why it failed (for answers the handler sends itself, e.g.
    the last frame of a WebSocket or a cut stream)."""
    observe.failed(error_code_name(error), error.reason)


def _internal(method: str, exc: BaseException) -> SagewireError:
    incident = uuid.uuid4().hex[:12]
    log.error("%s -> INTERNAL, incident %s", method, incident, exc_info=exc)
    return SagewireError(
        message=f"internal error in sagewire (incident {incident})",
        kind=ErrorKind.INTERNAL,
        reason="INTERNAL",
    )


def wrap(observer: Observer, method: str, route: str, handler: Handler) -> Handler:
    """`handler` behind the edge, recorded as InferenceService `method` on `route`."""

    async def edge(request: web.Request) -> web.StreamResponse:
        call = observe.open_call(observer, INFERENCE, method, request, route)
        response: web.StreamResponse | None = None
        try:
            with telemetry.rpc_span(INFERENCE, method, request.headers.items()) as span:
                traced()  # the record ends outside this span (below)
                try:
                    response = await handler(request)
                except (asyncio.CancelledError, ConnectionError):
                    raise
                except SagewireError as error:
                    failed(error)
                    telemetry.record_failure(span, error_code_name(error), error.reason)
                    response = error_response(error)
                except Exception as exc:
                    observe.failed("INTERNAL", "INTERNAL")
                    telemetry.record_failure(span, "INTERNAL", "INTERNAL")
                    response = error_response(_internal(method, exc))
            return response
        finally:
            observe.finish(call, response)

    observe.name_rpc(edge, INFERENCE, method, route)
    return edge
