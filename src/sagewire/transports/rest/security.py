"""The REST bridge's security hook, twin of the gRPC edge's (transports.grpc.credentials):
one aiohttp middleware hands every request's credentials to the same transport-neutral layer
(sagewire.security.guard), so authentication, per-route authorisation, quotas and the audit
log are the gRPC ones, for every route the bridge serves (transcoded RPCs, passthrough,
WebSocket Converse, UploadAsync) and any added later.

Open without credentials: `/healthz` and `/readyz` (probes). `/v1/openapi.json` describes the
API like reflection does, so it is open to `auth.reflection_callers` only.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Awaitable, Callable
from typing import cast

from aiohttp import web
from aiohttp.typedefs import Middleware

from sagewire.core.errors import ErrorKind, SagewireError
from sagewire.observability.calls import Observer
from sagewire.security.guard import Security
from sagewire.security.principal import (
    API_KEY_HEADER,
    AUTHORIZATION_HEADER,
    Credentials,
    PeerIdentity,
)
from sagewire.transports.grpc.edge import error_code_name
from sagewire.transports.grpc.observe import OFF
from sagewire.transports.rest import errors, observe
from sagewire.transports.rest.observe import PRINCIPAL, STARTED
from sagewire.transports.rest.openapi import PATH as OPENAPI_PATH

type Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

OPEN_PATHS = frozenset({"/healthz", "/readyz"})


def peer_identity(request: web.Request) -> PeerIdentity | None:
    """The verified client certificate's URI and DNS SANs, in certificate order."""
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if not isinstance(ssl_object, ssl.SSLObject):
        return None
    cert = ssl_object.getpeercert()
    if not cert:
        return None
    # ssl's dict: "subjectAltName" is a tuple of (type, value) pairs, e.g. ("URI", "spiffe://…").
    names = cast("tuple[tuple[str, str], ...]", cert.get("subjectAltName", ()))
    return PeerIdentity(
        uris=tuple(value for kind, value in names if kind == "URI"),
        dns_names=tuple(value for kind, value in names if kind == "DNS"),
    )


def rest_credentials(request: web.Request, mtls: bool) -> Credentials:
    authorization = tuple(request.headers.getall(AUTHORIZATION_HEADER, ()))
    api_key = tuple(request.headers.getall(API_KEY_HEADER, ()))
    return Credentials(
        authorization=authorization,
        api_key=api_key,
        peer=peer_identity(request) if mtls and not authorization and not api_key else None,
        method=f"{request.method} {request.path}"[:256],
    )


def _refusal(error: SagewireError) -> web.StreamResponse:
    response = errors.error_response(error)
    if error.kind is ErrorKind.UNAUTHENTICATED:  # RFC 6750: say how to authenticate
        response.headers["WWW-Authenticate"] = 'Bearer realm="sagewire"'
    return response


def security_middleware(security: Security, observer: Observer = OFF) -> Middleware:
    """Every request but the probes passes `security`; a refusal is answered here and recorded
    on `observer` (access record, HTTP metrics) like any other request."""

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS:
            return await handler(request)
        # The request's record starts here, not in its handler: authenticating (a JWKS fetch,
        # say) is part of the request's time, as it is of a gRPC call's.
        request[STARTED] = time.perf_counter()
        credentials = rest_credentials(request, security.mtls)
        try:
            if request.path == OPENAPI_PATH:
                await security.check_reflection(credentials)
                return await handler(request)
            scope = await security.enter(credentials)
        except SagewireError as error:
            response = _refusal(error)
            observe.refused(observer, request, response, error_code_name(error), error.reason)
            return response
        if scope is not None:  # for the access record (transports.rest.observe)
            request[PRINCIPAL] = scope.principal.id
        try:
            return await handler(request)
        finally:
            if scope is not None:
                scope.close()

    return authenticate
