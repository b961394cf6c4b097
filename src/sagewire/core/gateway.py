"""The gateway: resolve route → validate → policies → call SageMaker → shape the result.

Every transport calls these methods; none of them knows about gRPC or HTTP.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

from sagewire.config.operations import MODE_OPERATION, Operation
from sagewire.config.settings import OptionName, RouteMode, Settings, StreamFraming
from sagewire.core.coalesce import coalesce
from sagewire.core.deadlines import Deadline
from sagewire.core.errors import (
    ErrorKind,
    SagewireError,
    deadline_exceeded,
    invalid_argument,
)
from sagewire.core.framing import frame
from sagewire.core.ports import (
    BidiStreamPort,
    ResponseStream,
    RouteGuard,
    SageMakerBidiPort,
    SageMakerRuntimePort,
)
from sagewire.core.resilience import Resilience, RouteResilience
from sagewire.core.routes import Route, RouteTable
from sagewire.core.types import (
    BidiRequest,
    EndpointRequest,
    InvokeCall,
    InvokeResult,
    RouteInfo,
    StreamStart,
)
from sagewire.core.validation import (
    NEW_SESSION,
    validate_body_size,
    validate_media_type,
    validate_options,
)
from sagewire.observability import signals


def _wrong_mode(route: Route, rpc: str, wanted: str) -> SagewireError:
    return SagewireError(
        message=f"{rpc} needs a model of mode {wanted}; model {route.name!r} has mode "
        f"{route.mode.value}",
        kind=ErrorKind.FAILED_PRECONDITION,
        reason="WRONG_MODE",
        metadata={"model": route.name, "mode": route.mode.value},
    )


@dataclass(frozen=True)
class OpenStream:
    """A streaming response in progress."""

    start: StreamStart
    framing: StreamFraming
    pieces: AsyncIterator[bytes]


def _pieces(
    stream: ResponseStream, framing: StreamFraming, opened: float, coalesce_bytes: int
) -> AsyncIterator[bytes]:
    """The messages of a stream: records (lines, sse), or raw parts with those already waiting
    joined up to `coalesce_bytes` (sagewire.core.coalesce). Parts are counted before joining."""
    pieces = signals.relayed(frame(stream.parts(), framing), opened)
    if framing is StreamFraming.RAW and coalesce_bytes > 0:
        return coalesce(pieces, coalesce_bytes)
    return pieces


class Gateway:
    """Transport-neutral inference operations."""

    def __init__(
        self,
        settings: Settings,
        runtime: SageMakerRuntimePort,
        bidi: SageMakerBidiPort | None = None,
        guard: RouteGuard | None = None,
        caller_retrying: Callable[[], bool] | None = None,
    ) -> None:
        self._settings = settings
        self._runtime = runtime
        # HTTP/2 bidirectional streams; only needed when a route has mode `bidi`.
        self._bidi = bidi
        self.routes = RouteTable(settings.routes, settings.server.allow_endpoint_passthrough, guard)
        # Circuit breakers, cold-start waits and fallbacks per route (realtime and stream).
        # `caller_retrying`: whether the current call is a caller's own retry (one upstream
        # attempt, no cold-start waits: sagewire.aws.retries.caller_is_retrying).
        self._resilience = Resilience(caller_retrying or (lambda: False))

    def _resilient(self, route: Route) -> RouteResilience:
        return self._resilience.of(route.name, route.label, route.settings)

    def _with_endpoints(self, route: Route) -> RouteInfo:
        info = route.info()
        if route.mode not in (RouteMode.REALTIME, RouteMode.STREAM):
            return info
        return replace(info, endpoints=self._resilient(route).views())

    # -- ModelService ---------------------------------------------------------------------
    def list_models(self) -> list[RouteInfo]:
        return [self._with_endpoints(route) for route in self.routes.visible()]

    def get_model(self, name: str) -> RouteInfo:
        return self._with_endpoints(self.routes.resolve(name))

    # -- helpers --------------------------------------------------------------------------
    def _prepare(
        self, route: Route, call: InvokeCall, operation: Operation, session_id: str = ""
    ) -> EndpointRequest:
        if call.options.set_fields() or session_id:
            route.check_allowed(call.options, operation)
            options = call.options.over(route.defaults)
            if session_id:  # set by sagewire itself (Converse), so not subject to `allow`
                options = replace(options, session_id=session_id)
            validate_options(options)
        else:  # the route's defaults alone, checked by SageMaker's rules when it was loaded
            options = route.defaults
        # The route's own content type and accept were checked when it was loaded.
        content_type = call.content_type or route.settings.content_type
        accept = call.accept or route.settings.accept
        if call.content_type:
            validate_media_type("content_type", content_type)
        if call.accept:
            validate_media_type("accept", accept)
        validate_body_size(len(call.body), self._settings.server.max_body_bytes)
        return EndpointRequest(
            endpoint=route.settings.endpoint,
            body=call.body,
            content_type=content_type,
            accept=accept,
            options=options,
        )

    @staticmethod
    def _framing(route: Route, call: InvokeCall) -> StreamFraming:
        framing = route.settings.framing
        if call.framing is not None and call.framing is not framing:
            if OptionName.FRAMING.value not in route.allowed:
                raise invalid_argument(
                    "framing",
                    f"model {route.name!r} streams with {framing.value} framing and does not "
                    "allow callers to change it",
                    reason="OPTION_NOT_ALLOWED",
                )
            framing = call.framing
        return framing

    @staticmethod
    def _timeout(route: Route, call: InvokeCall) -> float:
        """The route's timeout, shortened by the caller's deadline when that comes first."""
        timeout = route.settings.timeout_s
        if call.time_remaining_s is not None:
            timeout = min(timeout, max(call.time_remaining_s, 0.0))
        return timeout

    # -- Invoke ---------------------------------------------------------------------------
    async def invoke(self, call: InvokeCall, *, session_id: str = "") -> InvokeResult:
        """InvokeEndpoint. `session_id` pins the call to a stateful session sagewire manages
        (Converse); callers' own session ids travel in `call.options`."""
        route = self.routes.resolve(call.model)
        if route.mode not in (RouteMode.REALTIME, RouteMode.STREAM):
            raise _wrong_mode(route, "Invoke", "realtime or stream")
        request = self._prepare(route, call, Operation.INVOKE_ENDPOINT, session_id)
        timeout = self._timeout(route, call)
        async with route.slot():
            try:
                # Deadline: asyncio.timeout's behaviour without a loop timer per call.
                deadline = asyncio.get_running_loop().time() + timeout
                async with Deadline(deadline):
                    return await self._resilient(route).invoke(self._runtime, request, deadline)
            except TimeoutError:
                raise deadline_exceeded(f"model {route.name!r}", timeout) from None

    # -- InvokeStream ---------------------------------------------------------------------
    @asynccontextmanager
    async def open_stream(
        self, call: InvokeCall, *, session_id: str = ""
    ) -> AsyncIterator[OpenStream]:
        """Open InvokeEndpointWithResponseStream; iterate `pieces` inside the block.

        Pieces are relayed as they arrive; under raw framing the parts already received when
        one is relayed go with it as one piece (`server.stream_coalesce_bytes`). At most one
        part is read ahead, so a slow reader holds the upstream connection back through TCP
        flow control.
        """
        route = self.routes.resolve(call.model)
        if route.mode is not RouteMode.STREAM:
            raise _wrong_mode(route, "InvokeStream", "stream")
        request = self._prepare(route, call, Operation.RESPONSE_STREAM, session_id)
        framing = self._framing(route, call)
        if request.options.session_id == NEW_SESSION:
            raise invalid_argument(
                "options.session_id",
                f"{NEW_SESSION} is only accepted by Invoke; open the session there first",
            )
        timeout = self._timeout(route, call)
        async with route.slot() as admitted:
            try:
                deadline = asyncio.get_running_loop().time() + timeout
                async with Deadline(deadline):
                    opened = time.perf_counter()
                    resilient = self._resilient(route)
                    async with resilient.open_stream(self._runtime, request, deadline) as stream:
                        admitted.answered()
                        pieces = _pieces(
                            stream, framing, opened, self._settings.server.stream_coalesce_bytes
                        )
                        yield OpenStream(stream.start, framing, pieces)
            except TimeoutError:
                raise deadline_exceeded(f"stream from model {route.name!r}", timeout) from None

    # -- Converse -------------------------------------------------------------------------
    def check_session(self, call: InvokeCall) -> tuple[Route, StreamFraming]:
        """The route and framing of a Converse session whose turns look like `call`.

        Raises, once when the session opens, what every turn would otherwise fail with:
        unknown model, wrong mode, options the route does not allow or SageMaker would reject.
        """
        route = self.routes.resolve(call.model)
        if route.mode is RouteMode.BIDI:
            self._bidi_request(route, call)
            return route, StreamFraming.RAW
        if route.mode not in (RouteMode.REALTIME, RouteMode.STREAM):
            raise _wrong_mode(route, "Converse", "realtime, stream or bidi")
        # Turns on stream routes use the response stream, on realtime routes InvokeEndpoint.
        self._prepare(route, call, MODE_OPERATION[route.mode.value])
        return route, self._framing(route, call)

    @staticmethod
    def _bidi_request(route: Route, call: InvokeCall) -> BidiRequest:
        """InvokeEndpointWithBidirectionalStream's parameters for `call` on a bidi route."""
        unused = (
            ("content_type", bool(call.content_type)),
            ("accept", bool(call.accept)),
            ("framing", call.framing is not None),
        )
        for name, is_set in unused:
            if is_set:
                raise invalid_argument(
                    name,
                    f"model {route.name!r} is a bidi route, whose parts carry a DataType (UTF8 "
                    "for text and JSON, BINARY for bytes) instead; leave it unset",
                )
        # The route's defaults were checked against the operation at start-up.
        route.check_allowed(call.options, Operation.BIDI)
        options = call.options.over(route.defaults)
        validate_options(options)
        return BidiRequest(
            endpoint=route.settings.endpoint,
            target_variant=options.target_variant,
            model_invocation_path=route.settings.bidi.model_invocation_path,
            model_query_string=route.settings.bidi.model_query_string,
        )

    @asynccontextmanager
    async def open_bidi(self, call: InvokeCall) -> AsyncIterator[BidiStreamPort]:
        """Open InvokeEndpointWithBidirectionalStream on a bidi route; use it inside the block.

        The stream holds one of the route's concurrency slots and is bounded as a whole by the
        route's `timeout_s` and the caller's deadline; leaving the block closes it upstream.
        """
        route = self.routes.resolve(call.model)
        if route.mode is not RouteMode.BIDI:
            raise _wrong_mode(route, "A bidirectional stream", "bidi")
        request = self._bidi_request(route, call)
        if self._bidi is None:  # the server opens it whenever a route has mode bidi
            raise SagewireError(
                message="this sagewire has no client for SageMaker's HTTP/2 API",
                kind=ErrorKind.FAILED_PRECONDITION,
                reason="BIDI_NOT_CONFIGURED",
            )
        timeout = self._timeout(route, call)
        async with route.slot() as admitted:
            try:
                async with asyncio.timeout(timeout), self._bidi.open_bidi(request) as stream:
                    admitted.answered()
                    yield stream
            except TimeoutError:
                raise deadline_exceeded(
                    f"bidirectional stream of model {route.name!r}", timeout
                ) from None
