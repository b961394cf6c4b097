"""CORS for internal web tools: off unless `rest.cors_allow_origins` names origins.

The Fetch standard's protocol (https://fetch.spec.whatwg.org/#http-cors-protocol):
- A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) from an allowed
  origin is answered `204` with the origin, the requested method and headers, and
  `Access-Control-Max-Age`; from any other origin `403` PERMISSION_DENIED (Status JSON), so the
  refusal says why instead of a bare browser error.
- Every other answer to an allowed origin, streams and WebSocket upgrades included, carries
  `Access-Control-Allow-Origin` and exposes the headers a client reads (`Retry-After`,
  `sagewire-*`, SageMaker's `X-Amzn-*`), with `Vary: Origin`. No credentials mode: sagewire's
  callers authenticate with headers, not cookies.

Why our own rather than aiohttp-cors: it is the few lines above, applied to every route
(including the transcoding catch-all, which aiohttp-cors cannot register per method), and it
needs no new dependency.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from aiohttp import hdrs, web

from sagewire.core.errors import ErrorKind, SagewireError
from sagewire.transports.rest.errors import error_response

type Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ANY = "*"
ALLOW_METHODS = "GET, POST, OPTIONS"
EXPOSE_HEADERS = ", ".join(
    (
        "Retry-After",
        "Allow",
        "sagewire-content-type",
        "sagewire-invoked-production-variant",
        "sagewire-endpoint-name",
        "X-Amzn-Invoked-Production-Variant",
        "X-Amzn-SageMaker-Custom-Attributes",
        "X-Amzn-SageMaker-New-Session-Id",
        "X-Amzn-SageMaker-Closed-Session-Id",
    )
)


class Cors:
    """The preflight middleware and the response hook for one list of allowed origins."""

    def __init__(self, origins: Sequence[str], max_age_s: int) -> None:
        self._any = ANY in origins
        self._origins = frozenset(origins)
        self._max_age = str(max_age_s)

    def allowed(self, origin: str) -> bool:
        return self._any or origin in self._origins

    def _allow_origin(self, origin: str) -> str:
        return ANY if self._any else origin

    @web.middleware
    async def preflight(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get(hdrs.ORIGIN)
        method = request.headers.get(hdrs.ACCESS_CONTROL_REQUEST_METHOD)
        if request.method != hdrs.METH_OPTIONS or origin is None or method is None:
            return await handler(request)
        if not self.allowed(origin):
            return error_response(
                SagewireError(
                    message=f"origin {origin!r} may not call this API from a browser; "
                    "the operator can add it to rest.cors_allow_origins",
                    kind=ErrorKind.PERMISSION_DENIED,
                    reason="CORS_ORIGIN_NOT_ALLOWED",
                    metadata={"origin": origin},
                )
            )
        headers = {
            hdrs.ACCESS_CONTROL_ALLOW_ORIGIN: self._allow_origin(origin),
            hdrs.ACCESS_CONTROL_ALLOW_METHODS: ALLOW_METHODS,
            hdrs.ACCESS_CONTROL_MAX_AGE: self._max_age,
            hdrs.VARY: "Origin",
        }
        wanted = request.headers.get(hdrs.ACCESS_CONTROL_REQUEST_HEADERS)
        if wanted:  # any request header: the bridge's own checks decide what is valid
            headers[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = wanted
        return web.Response(status=204, headers=headers)

    async def on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is None or not self.allowed(origin):
            return
        response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = self._allow_origin(origin)
        response.headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = EXPOSE_HEADERS
        response.headers.add(hdrs.VARY, "Origin")


def add_cors(app: web.Application, origins: Sequence[str], max_age_s: int) -> None:
    """Serve CORS for `origins` (nothing at all when it is empty).

    The preflight middleware goes right after the first one (the JSON error mapping) and so
    before authentication: browsers send preflights without credentials, and refusing them
    would hide every answer, the 401 included, from the page. Actual requests still pass
    authentication; their answers (refusals too) carry the CORS headers.
    """
    if not origins:
        return
    cors = Cors(origins, max_age_s)
    app.middlewares.insert(1, cors.preflight)
    app.on_response_prepare.append(cors.on_prepare)
