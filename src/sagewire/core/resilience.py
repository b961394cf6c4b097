"""One route's way to an answer: its endpoint, then its fallbacks, each behind a circuit
breaker, the last one tried waiting out a cold start (docs/resilience.md).

For each endpoint in order (the route's own, then `fallbacks`):
- an open circuit fails the attempt at once (CIRCUIT_OPEN);
- a failure that proves the endpoint did not run the model (`FALLBACK_ON`: throttling,
  SageMaker unavailable, unreachable, not ready, circuit open) moves on to the next endpoint;
  any other failure, or a success, ends the call there;
- on the last endpoint ModelNotReady is waited out within the deadline (sagewire.core.cold_start);
  earlier ones move on at once, since another endpoint may answer now. Not on a caller's own
  retry (`caller_retrying`, gRPC's grpc-previous-rpc-attempts): each of its attempts gets one
  upstream attempt per endpoint, as botocore's resends do (sagewire.aws.retries), so a caller's
  retry policy and sagewire's waits never multiply.
Nothing moves on once the call is pinned to its endpoint: a SageMaker session id lives on one
endpoint. For streams everything here happens before the stream opens, so before any byte
reaches the caller; failures after that end the stream (and feed the breaker).

Why not a wrapper implementing SageMakerRuntimePort: the order, the breakers' settings and the
deadline are the route's and the call's, which EndpointRequest does not carry.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace

from sagewire.config.settings import RouteSettings
from sagewire.core.admission import not_a_latency_sample
from sagewire.core.circuit_breaker import (
    CIRCUIT_OPEN,
    COUNTED,
    CircuitBreaker,
    CircuitState,
)
from sagewire.core.cold_start import MODEL_NOT_READY, wait_out_cold_start
from sagewire.core.errors import SagewireError
from sagewire.core.ports import ResponseStream, SageMakerRuntimePort
from sagewire.core.types import EndpointRequest, EndpointView, InvokeResult, StreamStart
from sagewire.observability import signals
from sagewire.observability.metrics import PASSTHROUGH

# Failures after which another endpoint is tried: each proves the model did not run (the
# resendable rows of sagewire.aws.error_table, and an open circuit), so the call cannot run twice.
FALLBACK_ON = frozenset(
    {
        "THROTTLED",
        "SAGEMAKER_UNAVAILABLE",
        "RUNTIME_UNREACHABLE",
        "UPSTREAM_TLS_FAILURE",
        MODEL_NOT_READY,
        CIRCUIT_OPEN,
    }
)


@dataclass
class _Target:
    endpoint: str
    target_variant: str
    fallback: bool
    breaker: CircuitBreaker
    label: str  # in metrics

    def request(self, request: EndpointRequest) -> EndpointRequest:
        if not self.fallback:
            return request
        options = replace(request.options, target_variant=self.target_variant)
        return replace(request, endpoint=self.endpoint, options=options)


@dataclass
class _Stream:
    """The opened stream, its failures fed to the endpoint's breaker."""

    start: StreamStart
    _inner: ResponseStream
    _breaker: CircuitBreaker

    async def parts(self) -> AsyncIterator[bytes]:
        try:
            async for part in self._inner.parts():
                yield part
        except SagewireError as error:
            if error.reason in COUNTED:
                self._breaker.failed(False)
            raise


class RouteResilience:
    """One route's endpoints and their breakers."""

    def __init__(
        self, label: str, settings: RouteSettings, caller_retrying: Callable[[], bool]
    ) -> None:
        self.settings = settings
        self._caller_retrying = caller_retrying

        def target(endpoint: str, variant: str, fallback: bool) -> _Target:
            # Metric label: pass-through endpoints are named by callers, so they share one.
            metric = PASSTHROUGH if label == PASSTHROUGH else endpoint
            metric += f"/{variant}" if variant else ""

            def changed(breaker: CircuitBreaker, state: CircuitState) -> None:
                signals.circuit_changed(metric, state.value)

            breaker = CircuitBreaker(settings.circuit_breaker, endpoint, variant, listener=changed)
            return _Target(endpoint, variant, fallback, breaker, metric)

        self._targets = [target(settings.endpoint, "", False)]
        self._targets += [target(f.endpoint, f.target_variant, True) for f in settings.fallbacks]

    def views(self) -> tuple[EndpointView, ...]:
        views = []
        for t in self._targets:
            circuit = t.breaker.view()
            views.append(
                EndpointView(
                    endpoint=t.endpoint,
                    target_variant=t.target_variant,
                    fallback=t.fallback,
                    circuit_state=circuit.state.value,
                    consecutive_failures=circuit.consecutive_failures,
                    half_open_in_s=circuit.half_open_in_s,
                )
            )
        return tuple(views)

    async def _through[T](
        self,
        request: EndpointRequest,
        deadline: float,
        call: Callable[[EndpointRequest], Awaitable[T]],
    ) -> tuple[T, _Target]:
        # A SageMaker session lives on one endpoint: calls carrying one never move on.
        targets = self._targets[:1] if request.options.session_id else self._targets
        tried: list[str] = []
        for index, target in enumerate(targets):
            last = index == len(targets) - 1
            sent = target.request(request)

            async def attempt(target: _Target = target, sent: EndpointRequest = sent) -> T:
                probe = target.breaker.admit()
                try:
                    result = await call(sent)
                except BaseException as error:
                    target.breaker.record(probe, error)
                    raise
                target.breaker.record(probe, None)
                return result

            try:
                if last and not self._caller_retrying():
                    result = await wait_out_cold_start(attempt, self.settings.cold_start, deadline)
                else:
                    result = await attempt()
            except SagewireError as error:
                if last or error.reason not in FALLBACK_ON:
                    raise _with_tried(error, tried) from None
                tried.append(f"{target.endpoint!r}: {error.reason}")
                continue
            if target.fallback:
                signals.fallback_answered(target.label)
                not_a_latency_sample()  # another endpoint's latency, after a failed attempt
            return result, target
        raise AssertionError("unreachable: the last target returns or raises")

    async def invoke(
        self, runtime: SageMakerRuntimePort, request: EndpointRequest, deadline: float
    ) -> InvokeResult:
        result, target = await self._through(request, deadline, runtime.invoke_endpoint)
        if result.endpoint == target.endpoint:  # sagewire.aws.runtime names it: no copy
            return result
        return replace(result, endpoint=target.endpoint)

    @asynccontextmanager
    async def open_stream(
        self, runtime: SageMakerRuntimePort, request: EndpointRequest, deadline: float
    ) -> AsyncIterator[ResponseStream]:
        async with AsyncExitStack() as stack:

            async def open_one(sent: EndpointRequest) -> ResponseStream:
                return await stack.enter_async_context(runtime.invoke_endpoint_stream(sent))

            stream, target = await self._through(request, deadline, open_one)
            start = stream.start  # sagewire.aws.runtime names the endpoint: no copy
            if start.endpoint != target.endpoint:
                start = replace(start, endpoint=target.endpoint)
            yield _Stream(start, stream, target.breaker)


def _with_tried(error: SagewireError, tried: list[str]) -> SagewireError:
    if not tried:
        return error
    return replace(
        error,
        message=f"{error.message} (fallbacks tried before: {'; '.join(tried)})",
        metadata={**error.metadata, "endpoints_tried": str(len(tried) + 1)},
    )


class Resilience:
    """Every route's RouteResilience, made on first use (pass-through routes included)."""

    def __init__(self, caller_retrying: Callable[[], bool] = lambda: False) -> None:
        # Whether the current call is a caller's own retry (sagewire.aws.retries decides).
        self._caller_retrying = caller_retrying
        self._routes: dict[str, RouteResilience] = {}

    def of(self, name: str, label: str, settings: RouteSettings) -> RouteResilience:
        found = self._routes.get(name)
        if found is None:
            found = self._routes[name] = RouteResilience(label, settings, self._caller_retrying)
        return found

    def views(self, name: str, label: str, settings: RouteSettings) -> tuple[EndpointView, ...]:
        return self.of(name, label, settings).views()
