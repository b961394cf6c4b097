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
from sagewire.aws.retries import mark_caller_retrying
from sagewire.core.errors import SagewireError
from sagewire.observability.calls import Call
from sagewire.security.guard import Security
from sagewire.transports.grpc import observe
from sagewire.transports.grpc.credentials import enter_call
from sagewire.transports.grpc.status import to_grpc_status

log = logging.getLogger("sagewire.access")

type Ctx = grpc.aio.ServicerContext[Any, Any]


async def abort_with(context: Ctx, error: SagewireError) -> None:
    status = to_grpc_status(error)
    await context.abort(status.code, status.details, status.trailing_metadata)


async def _handle(
    context: Ctx,
    method: str,
    exc: BaseException,
    started: float,
    span: Span | None,
    call: Call | None,
) -> None:
    if isinstance(exc, SagewireError):
        code = error_code_name(exc)
        if call is None or not call.observer.access:  # else the access record says it
            log.info(
                "%s -> %s (%s) in %.1f ms",
                method,
                code,
                exc.reason,
                (time.perf_counter() - started) * 1e3,
            )
        telemetry.record_failure(span, code, exc.reason)
        observe.failed(call, code, exc.reason)
        observe.finish(call)  # before the status goes out (observe.finish)
        await abort_with(context, exc)
    incident = uuid.uuid4().hex[:12]
    telemetry.record_failure(span, "INTERNAL", "INTERNAL")
    observe.failed(call, "INTERNAL", "INTERNAL")
    log.error("%s -> INTERNAL, incident %s", method, incident, exc_info=exc)
    observe.finish(call)
    await context.abort(
        grpc.StatusCode.INTERNAL, f"internal error in sagewire (incident {incident})"
    )


# Sent by gRPC clients on every attempt of a retried call after the first (gRFC A6): the number
# of attempts before this one.
PREVIOUS_ATTEMPTS = "grpc-previous-rpc-attempts"


def _note_caller_retry(metadata: Any) -> None:
    """A caller's retry gets one upstream attempt per AWS call (sagewire.aws.retries).
    `metadata`: the call's invocation metadata."""
    for key, value in metadata or ():
        if key == PREVIOUS_ATTEMPTS:
            if str(value).strip() not in ("", "0"):
                mark_caller_retrying()
            return


def _security(servicer: Any) -> Security | None:
    """The servicer's security layer when its server authenticates calls (else the edge skips
    the hook)."""
    security: Security | None = getattr(servicer, "security", None)
    return security if security is not None and security.enabled else None


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
        metadata = context.invocation_metadata()
        with telemetry.rpc_span(self.SERVICE, name, metadata) as span:
            call, request = observe.start(self, name, request)
            _note_caller_retry(metadata)
            scope = None  # the security layer's hold on the call (sagewire.security.guard)
            try:
                if (security := _security(self)) is not None:
                    method_path = f"/{self.SERVICE}/{name}"
                    scope = await enter_call(security, method_path, request, context)
                response = await method(self, request, context)
                if response is not None:  # Converse writes its messages itself
                    observe.sent(call, response)
            except (asyncio.CancelledError, grpc.aio.AbortError) as exc:
                observe.interrupted(call, context, exc)
                raise
            except Exception as exc:
                await _handle(context, name, exc, started, span, call)
                raise  # unreachable: abort raises
            finally:
                observe.finish(call)
                if scope is not None:
                    scope.close()
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
        metadata = context.invocation_metadata()
        with telemetry.rpc_span(self.SERVICE, name, metadata) as span:
            call, request = observe.start(self, name, request)
            _note_caller_retry(metadata)
            scope = None
            try:
                if (security := _security(self)) is not None:
                    method_path = f"/{self.SERVICE}/{name}"
                    scope = await enter_call(security, method_path, request, context)
                async for item in method(self, request, context):
                    observe.sent(call, item)
                    yield item
            except (asyncio.CancelledError, GeneratorExit, grpc.aio.AbortError) as exc:
                observe.interrupted(call, context, exc)
                raise
            except Exception as exc:
                await _handle(context, name, exc, started, span, call)
                raise
            finally:
                observe.finish(call)
                if scope is not None:
                    scope.close()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s -> OK in %.1f ms", name, (time.perf_counter() - started) * 1e3)

    return wrapper
