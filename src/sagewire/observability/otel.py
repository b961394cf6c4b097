"""OpenTelemetry over OTLP, configured by the standard OTEL_* environment variables.

sagewire installs an OTLP/gRPC span exporter and metric reader itself when the environment asks
for one: OTEL_EXPORTER_OTLP_ENDPOINT (or the per-signal OTEL_EXPORTER_OTLP_TRACES_ENDPOINT /
OTEL_EXPORTER_OTLP_METRICS_ENDPOINT) is set, or OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER
is `otlp`. `none` for a signal, or OTEL_SDK_DISABLED=true, turns it off. Everything else
(headers, TLS, timeouts, OTEL_METRIC_EXPORT_INTERVAL, OTEL_SERVICE_NAME,
OTEL_RESOURCE_ATTRIBUTES) is read by the OpenTelemetry SDK and exporter themselves. A provider
someone else installed first (e.g. `opentelemetry-instrument`) is left alone and used.

Metrics: `rpc.server.call.duration` (seconds, the RPC semantic conventions' histogram) per call.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from opentelemetry import metrics, trace

from sagewire.observability.metrics import LATENCY_BUCKETS

# The SDK is imported only when the environment asks for OTLP: a process without it never
# loads it (memory; docs/benchmarks.md, idle RSS).
if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    from sagewire.observability.calls import Call

log = logging.getLogger(__name__)

CALL_DURATION = "rpc.server.call.duration"
HTTP_DURATION = "http.server.request.duration"
_FLUSH_MS = 10_000
_CODES = {
    "OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5, "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9, "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12,
    "INTERNAL": 13, "UNAVAILABLE": 14, "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}  # fmt: skip


def _wanted(signal: str) -> bool:
    """Whether the environment asks for OTLP export of `signal` (TRACES or METRICS)."""
    env = os.environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get(f"OTEL_{signal}_EXPORTER", "").strip().lower()
    if exporter:
        return "otlp" in exporter.split(",")
    return bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")
    )


def _resource(service_name: str) -> Resource:
    from opentelemetry.sdk.resources import Resource

    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; they win.
    if os.environ.get("OTEL_SERVICE_NAME"):
        return Resource.create()
    return Resource.create({"service.name": service_name})


class RpcMeter:
    """`rpc.server.call.duration` for every gRPC call, `http.server.request.duration` for every
    REST bridge request (seconds, the semantic conventions' names and attributes)."""

    def __init__(self, provider: metrics.MeterProvider | None = None) -> None:
        meter = (provider or metrics.get_meter_provider()).get_meter("sagewire")
        self._duration = meter.create_histogram(
            CALL_DURATION,
            unit="s",
            description="Measures the duration of inbound RPC.",
        )
        self._http = meter.create_histogram(
            HTTP_DURATION, unit="s", description="Duration of HTTP server requests."
        )

    def record(self, call: Call, duration: float) -> None:
        if call.kind == "http":
            self._http.record(
                duration,
                {
                    "http.request.method": call.http_method,
                    "http.route": call.http_route,
                    "http.response.status_code": call.http_status,
                    "url.scheme": "http",
                    "sagewire.model": call.model,
                },
                call.otel_context,
            )
            return
        attributes: dict[str, str | int] = {
            "rpc.system": "grpc",
            "rpc.service": call.service,
            "rpc.method": call.method.rsplit("/", 1)[-1],
            "rpc.grpc.status_code": _CODES.get(call.code, 2),
            "sagewire.model": call.model,
        }
        # The call's own context (its span, for the exemplar): measurements are recorded in
        # batches, after the call (sagewire.observability.calls).
        self._duration.record(duration, attributes, call.otel_context)


class Otlp:
    """The providers sagewire installed from OTEL_* (none when the environment asks for none)."""

    def __init__(self, service_name: str) -> None:
        self.tracer_provider: TracerProvider | None = None
        self.meter_provider: MeterProvider | None = None
        if _wanted("TRACES"):
            if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                    OTLPSpanExporter,
                )
                from opentelemetry.sdk.trace import TracerProvider
                from opentelemetry.sdk.trace.export import BatchSpanProcessor

                self.tracer_provider = TracerProvider(resource=_resource(service_name))
                self.tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
                trace.set_tracer_provider(self.tracer_provider)
            else:
                log.info("OTLP traces: using the tracer provider already installed")
        if _wanted("METRICS"):
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                OTLPMetricExporter,
            )
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
            from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View

            # Seconds-scale buckets: the SDK's default boundaries are for milliseconds.
            views = [
                View(
                    instrument_name=name,
                    aggregation=ExplicitBucketHistogramAggregation(list(LATENCY_BUCKETS)),
                )
                for name in (CALL_DURATION, HTTP_DURATION)
            ]
            self.meter_provider = MeterProvider(
                resource=_resource(service_name),
                metric_readers=[PeriodicExportingMetricReader(OTLPMetricExporter())],
                views=views,
            )

    def meter(self) -> RpcMeter | None:
        """The call-duration meter: on our provider, else on one installed before us."""
        if self.meter_provider is not None:
            return RpcMeter(self.meter_provider)
        installed = metrics.get_meter_provider()
        if type(installed).__name__ in ("_ProxyMeterProvider", "NoOpMeterProvider"):
            return None
        return RpcMeter(installed)

    def shutdown(self) -> None:
        """Export what is pending (spans, a last metrics collection) before the process ends."""
        # A flush of its own first: the reader's last collection on shutdown is bounded by
        # the export interval, which a loaded machine can overrun.
        if self.meter_provider is not None:
            self.meter_provider.force_flush(timeout_millis=_FLUSH_MS)
            self.meter_provider.shutdown()
        if self.tracer_provider is not None:
            self.tracer_provider.force_flush(timeout_millis=_FLUSH_MS)
