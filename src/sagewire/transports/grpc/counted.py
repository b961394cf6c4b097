"""Call records for the RPCs sagewire's error edge never sees: health, reflection, and requests
refused as undecodable before a servicer runs.

The grpc-ecosystem series (go-grpc-prometheus, py-grpc-prometheus) count every RPC the server
handles, whatever its service, so a dashboard's request rate and error ratio include probes,
reflection and junk. sagewire's own services are recorded by their edge (transports.grpc.edge,
which knows the model, reason and principal); the guard (transports.grpc.decoding) wraps every
other service's handlers with `observed`, and records an undecodable request to one of
sagewire's own services with `refused`, since its edge never starts.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf.message import Message

from sagewire.observability.calls import Call, Observer, current
from sagewire.transports.grpc import observe

type Ctx = grpc.aio.ServicerContext[Any, Any]
type Behavior = Callable[..., Any]


def grpc_type(request_streaming: bool, response_streaming: bool) -> str:
    """go-grpc-prometheus's grpc_type label of a method with these streaming flags."""
    if request_streaming:
        return "bidi_stream" if response_streaming else "client_stream"
    return "server_stream" if response_streaming else "unary"


def _split(method: str) -> tuple[str, str]:
    """("grpc.health.v1.Health", "Check") from "/grpc.health.v1.Health/Check"."""
    service, _, name = method.lstrip("/").rpartition("/")
    return service, name


def refused(observer: Observer, method: str, kind: str, code: str, reason: str) -> None:
    """Record a call refused before any call record opened (undecodable request to a method
    whose edge records its calls)."""
    if not observer.enabled or current() is not None:
        return
    service, name = _split(method)
    call = observer.start(service, name, kind)
    call.received = 1
    call.code, call.reason = code, reason
    observer.finish(call)


def _size(message: Any) -> int:
    return message.ByteSize() if isinstance(message, Message) else 0


async def _counted(requests: AsyncIterator[Any], call: Call) -> AsyncIterator[Any]:
    async for message in requests:
        call.received += 1
        call.bytes_in += _size(message)
        yield message


def _ended(call: Call, context: Ctx, exc: BaseException) -> None:
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit, grpc.aio.AbortError)):
        observe.interrupted(call, context, exc)
    elif call.code == "OK":
        call.code = "UNKNOWN"  # what grpc.aio answers for an exception out of a handler


def observed(
    behavior: Behavior,
    observer: Observer,
    method: str,
    request_streaming: bool,
    response_streaming: bool,
) -> Behavior:
    """`behavior` (a grpc.aio method handler's) recording each call on `observer`."""
    if not observer.enabled:
        return behavior
    service, name = _split(method)
    kind = grpc_type(request_streaming, response_streaming)

    def open_call(request: Any) -> tuple[Call, Any]:
        call = observer.start(service, name, kind)
        if request_streaming:
            return call, _counted(request, call)
        call.received, call.bytes_in = 1, _size(request)
        return call, request

    if response_streaming:

        async def stream(request: Any, context: Ctx) -> AsyncIterator[Any]:
            call, request = open_call(request)
            try:
                async for item in behavior(request, context):
                    call.sent += 1
                    call.bytes_out += _size(item)
                    yield item
            except BaseException as exc:
                _ended(call, context, exc)
                raise
            finally:
                observer.finish(call)

        return stream

    async def unary(request: Any, context: Ctx) -> Any:
        call, request = open_call(request)
        try:
            result = behavior(request, context)
            response = await result if inspect.isawaitable(result) else result
            call.sent, call.bytes_out = 1, _size(response)
            return response
        except BaseException as exc:
            _ended(call, context, exc)
            raise
        finally:
            observer.finish(call)

    return unary
