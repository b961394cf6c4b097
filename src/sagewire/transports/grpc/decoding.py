"""Undecodable requests are the caller's fault: INVALID_ARGUMENT on every method, logged briefly.

grpc.aio parses a request message before any servicer code runs. Left alone, bytes that are not
the method's message (`ff ff ff`, or a string field with invalid UTF-8) end a unary-request call
as UNKNOWN "Unexpected <class 'google.protobuf.message.DecodeError'>", and a streamed request
(Converse, UploadAsync) as INTERNAL with an incident id, each logging a full traceback: a flood
of junk becomes a flood of log.

`guarded(server)` stands in for the server while services register (sagewire's own, health and
reflection alike), so every method handler gets a request deserializer that never raises: it
returns an `Undecodable` marker instead, and the handler refuses the call with
INVALID_ARGUMENT (reason MALFORMED_REQUEST) before the servicer sees it. On streamed requests
the marker raises `MalformedRequest` where the servicer reads it, ending the call the same way
(Converse and UploadAsync map it at their error edge). Each refusal logs one WARNING line
without traceback, at most one line per `LOG_INTERVAL_S` with a count of those left out.

Given an Observer, the guard also records the calls no servicer edge records (transports.grpc.
counted): every call of the services registered without one (health, reflection), and a
refused undecodable request to a method whose edge never started.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import grpc
from google.protobuf.message import DecodeError

from sagewire.core.errors import ErrorKind, SagewireError
from sagewire.observability.calls import Observer, failed
from sagewire.transports.grpc import counted
from sagewire.transports.grpc.observe import OFF
from sagewire.transports.grpc.status import to_grpc_status

log = logging.getLogger(__name__)

LOG_INTERVAL_S = 10.0
REASON = "MALFORMED_REQUEST"

type Ctx = grpc.aio.ServicerContext[Any, Any]
type Behavior = Callable[..., Any]
type Handler = grpc.RpcMethodHandler[Any, Any]
type Generic = grpc.GenericRpcHandler[Any, Any]


class RateLimitedLog:
    """One WARNING line per `interval_s` at most, saying how many were left out since the last.

    Own code because the standard logging module has no rate limit; a filter would need the
    same state and would still format every suppressed record.
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval_s
        self._clock = clock
        self._next = float("-inf")
        self.suppressed = 0

    def warning(self, message: str, *args: object) -> None:
        now = self._clock()
        if now < self._next:
            self.suppressed += 1
            return
        if self.suppressed:
            message += " (and %d more like it in the last %.0fs)"
            args = (*args, self.suppressed, self._interval)
        self.suppressed = 0
        self._next = now + self._interval
        self._logger.warning(message, *args)


_log = RateLimitedLog(log, LOG_INTERVAL_S)


class MalformedRequest(SagewireError):
    """A request message that could not be decoded as the method's message type."""


@dataclass(frozen=True, slots=True)
class Undecodable:
    """Stands for a request message that could not be decoded."""

    method: str
    message_type: str

    def error(self) -> MalformedRequest:
        return MalformedRequest(
            message=f"the request to {self.method} is not a valid {self.message_type} message "
            "(protobuf wire format); check the client's protos and serializer",
            kind=ErrorKind.INVALID_ARGUMENT,
            reason=REASON,
            metadata={"message_type": self.message_type},
        )


def _message_type(deserializer: Callable[[bytes], Any]) -> str:
    # Generated code passes `<Message>.FromString`, a classmethod bound to the message class.
    owner = getattr(deserializer, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    return str(getattr(descriptor, "full_name", "request"))


def _safe(deserializer: Callable[[bytes], Any], method: str) -> Callable[[bytes], Any]:
    message_type = _message_type(deserializer)

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except (DecodeError, UnicodeDecodeError, ValueError):
            _log.warning(
                "undecodable request to %s (not a %s): answered INVALID_ARGUMENT",
                method,
                message_type,
            )
            return Undecodable(method, message_type)

    return deserialize


async def _abort(context: Ctx, error: SagewireError) -> None:
    status = to_grpc_status(error)
    failed(status.code.name, error.reason)  # on the call record, when one is open
    await context.abort(status.code, status.details, status.trailing_metadata)


def _refuse(context: Ctx, request: Undecodable, observer: Observer, kind: str) -> Any:
    error = request.error()
    counted.refused(observer, request.method, kind, "INVALID_ARGUMENT", error.reason)
    return _abort(context, error)


async def _checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, Undecodable):
            raise request.error()
        yield request


async def _maybe_await(result: Any) -> Any:
    return await result if inspect.isawaitable(result) else result


def _unary_request(behavior: Behavior, observer: Observer) -> Behavior:
    if inspect.isasyncgenfunction(behavior):

        async def stream(request: Any, context: Ctx) -> AsyncIterator[Any]:
            if isinstance(request, Undecodable):
                await _refuse(context, request, observer, "server_stream")
            async for item in behavior(request, context):
                yield item

        return stream

    if inspect.iscoroutinefunction(behavior):  # sagewire's own methods: one await less

        async def coroutine(request: Any, context: Ctx) -> Any:
            if isinstance(request, Undecodable):
                await _refuse(context, request, observer, "unary")
            return await behavior(request, context)

        return coroutine

    async def unary(request: Any, context: Ctx) -> Any:
        if isinstance(request, Undecodable):
            await _refuse(context, request, observer, "unary")
        return await _maybe_await(behavior(request, context))

    return unary


def _stream_request(behavior: Behavior, observer: Observer) -> Behavior:
    if inspect.isasyncgenfunction(behavior):

        async def stream(requests: AsyncIterator[Any], context: Ctx) -> AsyncIterator[Any]:
            try:
                async for item in behavior(_checked(requests), context):
                    yield item
            except MalformedRequest as error:  # a servicer without sagewire's error edge
                await _abort(context, error)

        return stream

    async def unary(requests: AsyncIterator[Any], context: Ctx) -> Any:
        try:
            return await _maybe_await(behavior(_checked(requests), context))
        except MalformedRequest as error:
            await _abort(context, error)

    return unary


_FACTORIES: dict[tuple[bool, bool], tuple[str, Callable[..., Handler], Callable[..., Behavior]]] = {
    (False, False): ("unary_unary", grpc.unary_unary_rpc_method_handler, _unary_request),
    (False, True): ("unary_stream", grpc.unary_stream_rpc_method_handler, _unary_request),
    (True, False): ("stream_unary", grpc.stream_unary_rpc_method_handler, _stream_request),
    (True, True): ("stream_stream", grpc.stream_stream_rpc_method_handler, _stream_request),
}


def guard_handler(
    handler: Handler, method: str, observer: Observer = OFF, edge: bool = True
) -> Handler:
    """`handler` with a deserializer that never raises and a behaviour that refuses what it
    could not decode (see the module doc). `edge`: the servicer's own edge records its calls;
    otherwise each call is recorded here."""
    if handler.request_deserializer is None:
        return handler
    streaming = (handler.request_streaming, handler.response_streaming)
    attribute, make, wrap = _FACTORIES[streaming]
    behavior = wrap(getattr(handler, attribute), observer)
    if not edge:
        behavior = counted.observed(behavior, observer, method, *streaming)
    return make(
        behavior,
        request_deserializer=_safe(handler.request_deserializer, method),
        response_serializer=handler.response_serializer,
    )


class _GuardedGeneric(grpc.GenericRpcHandler):  # type: ignore[type-arg]  # not generic at run time
    def __init__(self, inner: Generic, registrar: _Registrar) -> None:
        self._inner = inner
        self._registrar = registrar
        # A service's methods are few and fixed: each is wrapped once.
        self._guarded: dict[str, Handler] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        method = handler_call_details.method
        guarded = self._guarded.get(method)
        if guarded is None:
            handler = self._inner.service(handler_call_details)
            if handler is None:  # not this service's: not remembered, callers pick the name
                return None
            guarded = self._guarded[method] = self._registrar.guard(handler, method)
        return guarded


class _Registrar:
    """What service registration functions (`add_*_to_server`) see instead of the server."""

    def __init__(self, server: grpc.aio.Server, observer: Observer, edges: frozenset[str]) -> None:
        self._server = server
        self._observer = observer
        self._edges = edges

    def guard(self, handler: Handler, method: str) -> Handler:
        service = method.lstrip("/").rpartition("/")[0]
        return guard_handler(handler, method, self._observer, service in self._edges)

    def add_generic_rpc_handlers(self, handlers: Sequence[Generic]) -> None:
        self._server.add_generic_rpc_handlers([_GuardedGeneric(h, self) for h in handlers])

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Handler]) -> None:
        # grpc-stubs predates add_registered_method_handlers (grpcio 1.62).
        server: Any = self._server
        server.add_registered_method_handlers(
            service,
            {name: self.guard(h, f"/{service}/{name}") for name, h in handlers.items()},
        )


def guarded(
    server: grpc.aio.Server, observer: Observer = OFF, edges: Sequence[str] = ()
) -> grpc.aio.Server:
    """A stand-in for `server` to pass to `add_*_to_server`: the services it registers refuse
    undecodable requests with INVALID_ARGUMENT. Calls are recorded on `observer`, here for
    every service but `edges` (full names of services whose servicer edge records its own)."""
    return cast("grpc.aio.Server", _Registrar(server, observer, frozenset(edges)))
