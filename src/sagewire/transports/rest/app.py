"""The REST bridge's aiohttp application: transcoded RPCs, health, and the hooks for the
routes that are not plain transcoding.

Why aiohttp's server: it is already a dependency (aioboto3 rides on it), runs on the same
uvloop event loop as grpc.aio in the same process, streams responses with explicit per-write
flushing (NDJSON/SSE) and serves WebSockets, and cancels a handler when its client disconnects
(`handler_cancellation`), which is how a hung-up caller stops the upstream SageMaker request.
A framework on top (FastAPI/Starlette) would add a second request model and validation layer
the bridge does not want: requests are protobuf messages, validated by the core.

Route order matters: aiohttp tries resources with longer literal prefixes first and the
transcoding catch-all (`/{tail:.*}`) last, so a route added by an `add_*_routes` function wins
over transcoding for its own path.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from sagewire.config.settings import Settings
from sagewire.core.endpoint_status import EndpointStatuses
from sagewire.core.errors import SagewireError
from sagewire.core.gateway import Gateway
from sagewire.observability.calls import Observer, current
from sagewire.security.guard import Security
from sagewire.transports.grpc.async_jobs import AsyncJobsService
from sagewire.transports.grpc.edge import error_code_name
from sagewire.transports.grpc.health import HealthService
from sagewire.transports.grpc.inference import InferenceServicer
from sagewire.transports.grpc.models import ModelServicer
from sagewire.transports.grpc.observe import OFF
from sagewire.transports.rest import errors, observe
from sagewire.transports.rest.cors import add_cors
from sagewire.transports.rest.invoke_json import FastInvoke
from sagewire.transports.rest.openapi import add_openapi_routes
from sagewire.transports.rest.passthrough import add_passthrough_routes
from sagewire.transports.rest.routes import Router, bindings
from sagewire.transports.rest.rpc import RpcHandler, servicer_bodies
from sagewire.transports.rest.security import security_middleware
from sagewire.transports.rest.upload import add_upload_routes
from sagewire.transports.rest.websocket import add_converse_routes
from sagewire.v1 import inference_service_pb2, model_service_pb2

SERVICES = [
    inference_service_pb2.DESCRIPTOR.services_by_name["InferenceService"],
    model_service_pb2.DESCRIPTOR.services_by_name["ModelService"],
]

# Application keys for routes added by other modules (passthrough, Converse, OpenAPI, ...).
GATEWAY = web.AppKey("gateway", Gateway)
SETTINGS = web.AppKey("settings", Settings)
ROUTER = web.AppKey("router", Router)
ASYNC_JOBS: web.AppKey[AsyncJobsService | None] = web.AppKey("async_jobs")
# Where calls are reported (sagewire.transports.rest.observe), for routes added elsewhere too.
OBSERVER = web.AppKey("observer", Observer)

type Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every answer the bridge gives is JSON: domain errors raised by any route, and aiohttp's
    own 404/405/413, become google.rpc.Status bodies. A request no route took (404, 405) is
    recorded here (access record, HTTP metrics), as `http_route=""`."""
    try:
        return await handler(request)
    except SagewireError as error:
        if error.reason == "UNKNOWN_ROUTE":  # the transcoding catch-all found no binding
            allowed = await _allowed_elsewhere(request)
            if allowed:
                error = errors.method_not_allowed(request.method, request.path, allowed)
        return _answer(request, error)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SETTINGS].rest.max_request_bytes
        return _answer(request, errors.body_too_large(limit))
    except web.HTTPMethodNotAllowed as exc:
        allowed = sorted(exc.allowed_methods)
        return _answer(request, errors.method_not_allowed(request.method, request.path, allowed))
    except web.HTTPNotFound:
        return _answer(request, errors.unknown_path(request.method, request.path))


def _answer(request: web.Request, error: SagewireError) -> web.StreamResponse:
    response = errors.error_response(error)
    if current() is None:  # no handler opened the request's record: a request no route took
        code = error_code_name(error)
        observe.refused(request.app[OBSERVER], request, response, code, error.reason)
    return response


async def _allowed_elsewhere(request: web.Request) -> list[str]:
    """The methods the app's own routes (passthrough, upload, ...) take on this path: the
    transcoding catch-all takes every method, so aiohttp's own 405 never happens."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        match, methods = await resource.resolve(request)
        if match is None:
            allowed |= methods
    return sorted(allowed)


def _custom_verbs(app: web.Application) -> set[str]:
    """The `:verb` suffixes of the app's own routes (a variable, then `:verb`, at the end)."""
    found = set()
    for resource in app.router.resources():
        match = re.search(r"\}:([A-Za-z][A-Za-z0-9_]*)$", resource.canonical)
        if match:
            found.add(match.group(1))
    return found


def build_app(
    settings: Settings,
    gateway: Gateway,
    async_jobs: AsyncJobsService | None,
    statuses: EndpointStatuses,
    health: HealthService,
    observer: Observer = OFF,
    security: Security | None = None,
) -> web.Application:
    """The bridge over the same core objects the gRPC server gets (transports.grpc.server),
    behind the same security layer when authentication is on."""
    middlewares: list[Middleware] = [json_errors]
    if security is not None and security.enabled:
        middlewares.append(security_middleware(security, observer))
    app = web.Application(middlewares=middlewares, client_max_size=settings.rest.max_request_bytes)
    router = Router(bindings(SERVICES))
    app[GATEWAY] = gateway
    app[SETTINGS] = settings
    app[ROUTER] = router
    app[ASYNC_JOBS] = async_jobs
    app[OBSERVER] = observer
    inference = InferenceServicer(gateway, settings.server.max_json_view_bytes, async_jobs)
    servicers: dict[str, object] = {
        "sagewire.v1.InferenceService": inference,
        "sagewire.v1.ModelService": ModelServicer(gateway, statuses),
    }
    add_health_routes(app, health)
    # Routes that are not plain transcoding, each from its own module, before the catch-all.
    add_openapi_routes(app)
    add_passthrough_routes(app, gateway, settings.server.max_body_bytes, observer)
    add_converse_routes(
        app,
        gateway,
        settings.server.max_json_view_bytes,
        settings.server.max_message_bytes,
        observer,
    )
    add_upload_routes(app, async_jobs, observer)
    add_cors(app, settings.rest.cors_allow_origins, settings.rest.cors_max_age_s)
    # Their custom verbs (`:uploadAsync`, `:converse`) are verbs to the transcoding router
    # too, so `PUT /v1/models/m:uploadAsync` is a wrong method, not GetModel("m:uploadAsync").
    router.add_verbs(_custom_verbs(app))
    handler = RpcHandler(
        router,
        servicer_bodies(servicers, router),
        settings.rest.max_request_bytes,
        observer,
        FastInvoke(inference),
    )
    app.router.add_route("*", "/{tail:.*}", handler.handle)
    return app


def add_health_routes(app: web.Application, health: HealthService) -> None:
    """`/healthz`: the process answers. `/readyz`: it takes calls (503 once draining)."""

    async def live(request: web.Request) -> web.Response:
        return web.json_response({"status": "SERVING"})

    async def ready(request: web.Request) -> web.Response:
        if health.serving():
            return web.json_response({"status": "SERVING"})
        return web.json_response({"status": "NOT_SERVING"}, status=503)

    app.router.add_get("/healthz", live)
    app.router.add_get("/readyz", ready)
