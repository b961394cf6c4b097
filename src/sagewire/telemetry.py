"""OpenTelemetry tracing: one SERVER span per RPC, continuing the caller's W3C trace context.

sagewire only uses the OpenTelemetry API at call time; which provider and exporter receive the
spans is the deployer's choice (e.g. `opentelemetry-instrument` with an OTLP exporter installed
next to sagewire). `telemetry.console_spans = true` installs the SDK with a console exporter for
debugging. With no provider configured, tracing costs one flag check per call.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

_tracer = trace.get_tracer("sagewire")


class _State:
    active = False


def configure(console_spans: bool, service_name: str = "sagewire") -> None:
    """Install a console exporter if asked; then trace only when some provider is installed."""
    if console_spans:
        # Only then: without a provider of its own sagewire never loads the SDK (memory).
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

        provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        trace.set_tracer_provider(provider)
    _State.active = not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def tracing() -> bool:
    """Whether spans go anywhere (a provider is installed)."""
    return _State.active


# What rpc_span gives when tracing is off: one shared, stateless context manager, so the call
# path pays no generator-based context manager per RPC.
_NO_SPAN: AbstractContextManager[None] = nullcontext(None)


def rpc_span(
    service: str, method: str, metadata: Iterable[Any] | None
) -> AbstractContextManager[Span | None]:
    """A SERVER span for one RPC (None when tracing is off). Never records payloads.

    `metadata` is the call's invocation metadata: (key, value) pairs.
    """
    if not _State.active:
        return _NO_SPAN
    return _span(service, method, metadata)


@contextmanager
def _span(service: str, method: str, metadata: Iterable[Any] | None) -> Iterator[Span]:
    carrier = {item[0]: item[1] for item in (metadata or ()) if isinstance(item[1], str)}
    with _tracer.start_as_current_span(
        f"{service}/{method}",
        context=propagate.extract(carrier),
        kind=SpanKind.SERVER,
        attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": method},
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield span


def record_failure(span: Span | None, code: str, reason: str) -> None:
    if span is not None:
        span.set_attribute("rpc.grpc.status_code", code)
        span.set_attribute("sagewire.error.reason", reason)
        span.set_status(Status(StatusCode.ERROR, reason))
