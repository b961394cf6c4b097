"""Transcoded RPCs: HTTP request → request message → the servicer's own body → HTTP answer.

The REST edge, twin of transports.grpc.edge: it maps every domain error through the one
error table, turns anything unexpected into INTERNAL with an incident id (never a stack trace),
writes the access log line (method, status, duration; no payloads) and the RPC's trace span.
The RPC itself is the gRPC servicer's method body (unwrapped from its gRPC edge), called with
a RestContext, so validation, limits and conversions exist once.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import aclosing
from typing import Any

from aiohttp import web
from google.protobuf.message import Message

from sagewire import telemetry
from sagewire.core.errors import ErrorKind, SagewireError, deadline_exceeded
from sagewire.observability.calls import Observer, traced
from sagewire.transports.grpc.edge import error_code_name
from sagewire.transports.grpc.observe import OFF
from sagewire.transports.rest import errors, observe, streaming, transcode
from sagewire.transports.rest.context import TIMEOUT_HEADER, RestContext, parse_timeout
from sagewire.transports.rest.invoke_json import FastInvoke
from sagewire.transports.rest.routes import Binding, Router

log = logging.getLogger("sagewire.access")

type Body = Callable[[Message, RestContext], Any]


def servicer_bodies(servicers: Mapping[str, object], router: Router) -> dict[Binding, Body]:
    """Each binding's servicer method body (service full name → servicer instance)."""
    bodies: dict[Binding, Body] = {}
    for binding in router.bindings:
        servicer = servicers[binding.service]
        method = inspect.unwrap(getattr(type(servicer), binding.method.name))
        bodies[binding] = method.__get__(servicer)
    return bodies


def _internal(name: str, exc: BaseException) -> SagewireError:
    incident = uuid.uuid4().hex[:12]
    log.error("%s -> INTERNAL, incident %s", name, incident, exc_info=exc)
    return SagewireError(
        message=f"internal error in sagewire (incident {incident})",
        kind=ErrorKind.INTERNAL,
        reason="INTERNAL",
    )


class RpcHandler:
    """Serves every transcoded binding of `router` with the servicers' bodies."""

    def __init__(
        self,
        router: Router,
        bodies: Mapping[Binding, Body],
        max_bytes: int,
        observer: Observer = OFF,
        invoke: FastInvoke | None = None,
    ) -> None:
        self._router = router
        self._bodies = bodies
        self._max_bytes = max_bytes
        self._observer = observer
        # Invoke's own transcoding (transports.rest.invoke_json), for its hot `:invoke` binding.
        self._invoke = invoke

    def rpc_of(self, request: web.Request) -> tuple[str, str, str] | None:
        """(service, method, route template) of the binding `request` matches, if any
        (transports.rest.observe.rpc_of)."""
        try:
            binding, _ = self._router.match(request.method, request.rel_url.raw_path)
        except SagewireError:
            return None
        return binding.service, binding.method.name, binding.template.source

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Routing errors (404, 405) are raised for the app's error middleware."""
        # The raw path: a %2F inside a segment is not a separator (http_rule decodes values).
        binding, variables = self._router.match(request.method, request.rel_url.raw_path)
        call = observe.start(self._observer, binding, request)
        response: web.StreamResponse | None = None
        try:
            response = await self._handle(request, binding, variables)
        finally:
            observe.finish(call, response)
        return response

    async def _handle(
        self, request: web.Request, binding: Binding, variables: dict[str, str]
    ) -> web.StreamResponse:
        started = time.perf_counter()
        name = binding.method.name
        # A view, not a copy: read only when tracing is on or a body asks for the metadata.
        headers = request.headers.items()
        with telemetry.rpc_span(binding.service, name, headers) as span:
            traced()  # the record ends outside this span (handle)
            try:
                timeout = request.headers.get(TIMEOUT_HEADER)
                context = RestContext(headers, parse_timeout(timeout) if timeout else None)
                body = await _read(request, self._max_bytes) if binding.body else b""
                # The fast path answers only what it also read: a request it handed to the
                # generic path may set fields (options, ...) its answer does not know.
                fast = None
                message: Message | None = None
                if self._invoke is not None and self._invoke.serves(binding):
                    message = self._invoke.request(variables, request.query, body)
                    fast = self._invoke if message is not None else None
                if message is None:
                    message = transcode.request_message(
                        binding, variables, request.query.items(), body
                    )
                if binding.streaming:
                    response = await self._stream(request, binding, message, context)
                else:
                    response = await self._unary(binding, message, context, fast)
            except SagewireError as error:
                _log_failure(name, error, started, span)
                return errors.error_response(error)
            except Exception as exc:
                observe.failed("INTERNAL", "INTERNAL")
                return errors.error_response(_internal(name, exc))
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s -> OK in %.1f ms", name, (time.perf_counter() - started) * 1e3)
        return response

    async def _unary(
        self,
        binding: Binding,
        message: Message,
        context: RestContext,
        fast: FastInvoke | None = None,
    ) -> web.StreamResponse:
        result: Any
        try:
            async with asyncio.timeout(context.timeout_s):
                if fast is not None:
                    result = await fast.call(message, context)  # type: ignore[arg-type]
                else:
                    result = await self._bodies[binding](message, context)
        except TimeoutError:
            raise _deadline(binding, context) from None
        if fast is not None:
            body = fast.answer(result, message)  # type: ignore[arg-type]  # fast.request's
        else:
            body = transcode.response_bytes(binding, result)
        return web.Response(
            body=body,
            content_type=errors.JSON_TYPE,
            headers=dict(context.initial_metadata),
        )

    async def _stream(
        self,
        request: web.Request,
        binding: Binding,
        message: Message,
        context: RestContext,
    ) -> web.StreamResponse:
        """Messages flushed one by one; an error before the first is an ordinary HTTP error
        (raised), after it the stream's last record (streaming module)."""
        form = streaming.negotiate(request.headers.get("Accept", ""))
        response: web.StreamResponse | None = None
        messages: AsyncIterator[Message] = self._bodies[binding](message, context)
        try:
            async with asyncio.timeout(context.timeout_s), aclosing(messages):  # type: ignore[type-var]
                async for item in messages:
                    if response is None:
                        response = await _open(request, form, context)
                    await response.write(form.message(transcode.to_json(item)))
        except TimeoutError:
            if response is None:
                raise _deadline(binding, context) from None
            await _end_with(response, form, binding, _deadline(binding, context))
        except ConnectionError:
            raise  # the client went away: nobody to tell
        except Exception as exc:
            if response is None:
                raise
            error = exc if isinstance(exc, SagewireError) else _internal(binding.method.name, exc)
            await _end_with(response, form, binding, error)
        if response is None:
            response = await _open(request, form, context)
        await response.write_eof()
        return response


async def _end_with(
    response: web.StreamResponse,
    form: streaming.StreamFormat,
    binding: Binding,
    error: SagewireError,
) -> None:
    """A failure after data was sent: logged, then the stream's last record."""
    observe.failed(error_code_name(error), error.reason)
    log.info("%s -> %s (%s) after data", binding.method.name, error_code_name(error), error.reason)
    await response.write(form.error(errors.status_dict(error)))


def _deadline(binding: Binding, context: RestContext) -> SagewireError:
    return deadline_exceeded(f"{binding.method.name} ({TIMEOUT_HEADER})", context.timeout_s or 0.0)


async def _open(
    request: web.Request, form: streaming.StreamFormat, context: RestContext
) -> web.StreamResponse:
    response = web.StreamResponse(headers=dict(context.initial_metadata))
    response.content_type = form.content_type
    if form.sse:
        response.headers["Cache-Control"] = "no-cache"
    await response.prepare(request)
    return response


async def _read(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise errors.body_too_large(limit)
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise errors.body_too_large(limit) from None


def _log_failure(name: str, error: SagewireError, started: float, span: Any) -> None:
    code = error_code_name(error)
    observe.failed(code, error.reason)
    if not observe.access_logged():  # else the access record says it
        log.info(
            "%s -> %s (%s) in %.1f ms",
            name,
            code,
            error.reason,
            (time.perf_counter() - started) * 1e3,
        )
    telemetry.record_failure(span, code, error.reason)
