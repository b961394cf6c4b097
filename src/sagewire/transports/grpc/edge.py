"""The error edge: every servicer method is wrapped so that a domain error becomes its
mapped status, and anything unexpected becomes INTERNAL with a log line (never a stack trace
to the caller, never UNKNOWN). Also the access log (method, status, duration, no payloads) and
the RPC's trace span. Servicers name their service in a `SERVICE` class attribute.

Decorators rather than a server interceptor: grpc.aio interceptors rebuild the method handler
on every call, which costs measurable CPU per RPC.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from opentelemetry.trace import Span

from sagewire import telemetry
from sagewire.core.errors import SagewireError
from sagewire.transports.grpc.status import to_grpc_status

log = logging.getLogger("sagewire.access")

type Ctx = grpc.aio.ServicerContext[Any, Any]


async def abort_with(context: Ctx, error: SagewireError) -> None:
    status = to_grpc_status(error)
    await context.abort(status.code, status.details, status.trailing_metadata)


async def _handle(
    context: Ctx, method: str, exc: BaseException, started: float, span: Span | None
) -> None:
    if isinstance(exc, SagewireError):
        code = error_code_name(exc)
        log.info(
            "%s -> %s (%s) in %.1f ms",
            method,
            code,
            exc.reason,
            (time.perf_counter() - started) * 1e3,
        )
        telemetry.record_failure(span, code, exc.reason)
        await abort_with(context, exc)
    incident = uuid.uuid4().hex[:12]
    telemetry.record_failure(span, "INTERNAL", "INTERNAL")
    log.error("%s -> INTERNAL, incident %s", method, incident, exc_info=exc)
    await context.abort(
        grpc.StatusCode.INTERNAL, f"internal error in sagewire (incident {incident})"
    )


def error_code_name(error: SagewireError) -> str:
    return to_grpc_status(error).code.name


def unary[Req, Resp](
    method: Callable[[Any, Req, Ctx], Awaitable[Resp]],
) -> Callable[[Any, Req, Ctx], Awaitable[Resp]]:
    """Wrap a unary-response servicer method (unary-unary or stream-unary)."""
    name = method.__name__

    @functools.wraps(method)
    async def wrapper(self: Any, request: Req, context: Ctx) -> Resp:
        started = time.perf_counter()
        with telemetry.rpc_span(self.SERVICE, name, context.invocation_metadata()) as span:
            try:
                response = await method(self, request, context)
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as exc:
                await _handle(context, name, exc, started, span)
                raise  # unreachable: abort raises
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s -> OK in %.1f ms", name, (time.perf_counter() - started) * 1e3)
        return response

    return wrapper


def streaming[Req, Resp](
    method: Callable[[Any, Req, Ctx], AsyncIterator[Resp]],
) -> Callable[[Any, Req, Ctx], AsyncIterator[Resp]]:
    """Wrap a streaming-response servicer method; messages already sent stay sent."""
    name = method.__name__

    @functools.wraps(method)
    async def wrapper(self: Any, request: Req, context: Ctx) -> AsyncIterator[Resp]:
        started = time.perf_counter()
        with telemetry.rpc_span(self.SERVICE, name, context.invocation_metadata()) as span:
            try:
                async for item in method(self, request, context):
                    yield item
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as exc:
                await _handle(context, name, exc, started, span)
                raise
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s -> OK in %.1f ms", name, (time.perf_counter() - started) * 1e3)

    return wrapper
