"""Converse over a WebSocket: `GET /v1/models/{model}:converse` with `Upgrade: websocket`.

Each text frame from the client is one ConverseRequest and each text frame from sagewire one
ConverseResponse, in the proto3 JSON mapping, read and written as the transcoded routes read
and write bodies (transports.rest.transcode: both field spellings in, lowerCamelCase out, bytes
as base64). The session is the same as over gRPC: the
first frame is `open` (its `model` may be left out: the path names it), then `turn`, `cancel`
and `close` frames; per-turn failures arrive in-band as `turnError` frames. The frames run
through the gRPC servicer's own Converse body (transports.grpc.converse.serve, over
core.converse), so limits, turn semantics and error details cannot drift between transports.

How a session ends, since a WebSocket has no trailers: normally, the server closes with code
1000 after the last answer (after `close`, or when the model ends a bidi stream). On an error
that ends the session (the status a gRPC Converse would end with), the server first sends one
text frame `{"error": <google.rpc.Status JSON>}`, the same body an HTTP error carries, then
closes with code 4000 + the google.rpc code (e.g. 4003 INVALID_ARGUMENT, 4004
DEADLINE_EXCEEDED) and the ErrorInfo reason as the close reason. A client that closes the
socket or disconnects cancels the session: running turns and their upstream calls stop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import cast

from aiohttp import WSMsgType, web

from sagewire.core.errors import ErrorKind, SagewireError, deadline_exceeded, invalid_argument
from sagewire.core.gateway import Gateway
from sagewire.observability.calls import Observer
from sagewire.transports.grpc import converse as proto_converse
from sagewire.transports.grpc.edge import Ctx, error_code_name
from sagewire.transports.grpc.observe import OFF
from sagewire.transports.grpc.status import to_rpc_status
from sagewire.transports.rest import edge, transcode
from sagewire.transports.rest.context import TIMEOUT_HEADER, RestContext, timeout_of
from sagewire.v1 import converse_pb2

log = logging.getLogger(__name__)

PATH = "/v1/models/{model}:converse"
# Close codes 4000–4999 are the application's (RFC 6455 §7.4.2): 4000 + google.rpc.Code.
CLOSE_BASE = 4000
_MAX_REASON_BYTES = 123  # a close frame's reason (RFC 6455 §5.5)
_GONE = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR)


def _client_gone() -> SagewireError:
    return SagewireError(
        message="the client closed the WebSocket; the session was cancelled",
        kind=ErrorKind.CANCELLED,
        reason="CLIENT_CLOSED",
    )


def parse_frame(text: str, index: int) -> converse_pb2.ConverseRequest:
    """One text frame as a ConverseRequest, checked as a JSON request body is; an error names
    the frame (`frame 3: …`) and keeps the body check's reason."""
    try:
        return cast(
            converse_pb2.ConverseRequest,
            transcode.parse_message(text.encode(), converse_pb2.ConverseRequest()),
        )
    except SagewireError as error:
        problem = error.violations[0].description if error.violations else error.message
        raise invalid_argument(f"frame {index}", problem, reason=error.reason) from None


async def requests(ws: web.WebSocketResponse) -> AsyncIterator[converse_pb2.ConverseRequest]:
    """The client's frames as ConverseRequests; a close or disconnect raises CANCELLED (the
    session stops, its turns with it), a binary frame INVALID_ARGUMENT."""
    index = 0
    while True:
        message = await ws.receive()
        if message.type in _GONE:
            raise _client_gone()
        if message.type is not WSMsgType.TEXT:
            raise invalid_argument(
                f"frame {index}", "must be a text frame carrying proto3 JSON, not binary"
            )
        yield parse_frame(message.data, index)
        index += 1


async def with_model(
    frames: AsyncIterator[converse_pb2.ConverseRequest], model: str
) -> AsyncIterator[converse_pb2.ConverseRequest]:
    """The frames with the path's model in `open` (which may leave it out, or repeat it)."""
    async for request in frames:
        if request.WhichOneof("kind") == "open":
            if request.open.model and request.open.model != model:
                raise invalid_argument(
                    "open.model",
                    f"is {request.open.model!r} but the path names model {model!r}; leave it "
                    "out or make them agree",
                )
            request.open.model = model
        yield request


def encode(response: converse_pb2.ConverseResponse) -> str:
    """The proto3 JSON text of a frame, numbers as the transcoded routes write them."""
    return transcode.dumps(transcode.to_json(response)).decode()


class SocketContext(RestContext):
    """What the gRPC Converse body uses of its context: the deadline, and `write`."""

    def __init__(self, request: web.Request, ws: web.WebSocketResponse) -> None:
        super().__init__(request.headers.items(), timeout_of(request.headers))
        self._ws = ws

    async def write(self, message: converse_pb2.ConverseResponse) -> None:
        await self._ws.send_str(encode(message))


async def _end_with(ws: web.WebSocketResponse, error: SagewireError) -> None:
    """The session's error as a last frame, then the close code that names it."""
    if ws.closed:
        return
    edge.failed(error)
    status = to_rpc_status(error)
    try:
        await ws.send_str(transcode.dumps({"error": transcode.to_json(status)}).decode())
        await ws.close(
            code=CLOSE_BASE + status.code, message=error.reason.encode()[:_MAX_REASON_BYTES]
        )
    except ConnectionError:
        pass  # the client is already gone


class ConverseSocket:
    """The WebSocket handler; `max_frame_bytes` bounds one frame (the gRPC message limit)."""

    def __init__(self, gateway: Gateway, json_limit: int, max_frame_bytes: int) -> None:
        self._gateway = gateway
        self._json_limit = json_limit
        self._max_frame = max_frame_bytes

    async def handle(self, request: web.Request) -> web.StreamResponse:
        model = request.match_info["model"]
        ws = web.WebSocketResponse(max_msg_size=self._max_frame)
        if not ws.can_prepare(request).ok:
            raise invalid_argument(
                "Upgrade",
                f"{request.path} is Converse over a WebSocket: open it with a WebSocket "
                "client (Upgrade: websocket)",
            )
        context = SocketContext(request, ws)  # a bad Grpc-Timeout fails the upgrade
        await ws.prepare(request)
        try:
            frames = with_model(requests(ws), model)
            # The deadline ends the whole session, as gRPC ends a call whose deadline passed.
            try:
                async with asyncio.timeout(context.timeout_s):
                    await proto_converse.serve(
                        self._gateway, frames, cast(Ctx, context), self._json_limit
                    )
            except TimeoutError:
                raise deadline_exceeded(
                    f"Converse on model {model!r} ({TIMEOUT_HEADER})", context.timeout_s or 0.0
                ) from None
        except SagewireError as error:
            log.info("Converse (WebSocket) -> %s (%s)", error_code_name(error), error.reason)
            await _end_with(ws, error)
        except ConnectionError:
            log.info("Converse (WebSocket): the client went away")
        else:
            await ws.close()
        return ws


def add_converse_routes(
    app: web.Application,
    gateway: Gateway,
    json_limit: int,
    max_frame_bytes: int,
    observer: Observer = OFF,
) -> None:
    """Register `GET /v1/models/{model}:converse` (WebSocket; recorded as Converse)."""
    handler = ConverseSocket(gateway, json_limit, max_frame_bytes).handle
    app.router.add_get(PATH, edge.wrap(observer, "Converse", PATH, handler))
