"""Prometheus metrics: the grpc-ecosystem server series and sagewire's own, on one registry.

The `grpc_server_*` names and labels are those of go-grpc-prometheus / py-grpc-prometheus, so
existing gRPC dashboards and alerts read sagewire unchanged. sagewire's own series
(`sagewire_*`) are labelled by model (route) and by small fixed vocabularies (SageMaker
operation, ErrorInfo reason, async job state); never by job ids, endpoint names a caller sent,
or anything else a caller controls. docs/observability.md lists every series.

Per-call updates are not applied to prometheus-client's instruments one by one. Counters and
gauges changed on every call (`Metrics.pending`: calls started, handled, messages, a route's
calls in flight) add to a plain number, and histograms (`Metrics.pending_histogram`) count into
their buckets; other updates wait in a list (`Metrics.later`, applied at most `APPLY_AFTER_S`
later or when `MAX_WAITING` wait). All of it reaches the instruments, summed (one `inc(n)` per
series), before every collection of the registry (a scrape), so a scrape never misses a call
that ended before it, and whenever a batch of finished calls is applied. In multiprocess mode
every update is applied at once: another process's scrape could not apply it. Why: observing
a call runs between the rest of the call's work, with the processor's caches full of that,
where each prometheus-client update (a lock, a float) cost several times what it costs in a
batch (docs/benchmarks.md, observability).

Multiprocess: when PROMETHEUS_MULTIPROC_DIR is set before sagewire starts, prometheus-client
keeps every value in per-process files there and the listener (sagewire.observability.admin)
serves the sum over all processes; gauges say how processes combine (`multiprocess_mode`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric

from sagewire.observability.batches import Batch, Pending, PendingHistogram

_log = logging.getLogger("sagewire.metrics")

# Long enough for model calls and streams (minutes), fine enough for fast unary calls.
LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip
GRPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")
# What `model` reads for calls that named no configured route (unknown model, pass-through
# endpoints): caller-supplied strings never become label values.
NO_ROUTE = ""
PASSTHROUGH = "(passthrough)"


def multiprocess_dir() -> str | None:
    """PROMETHEUS_MULTIPROC_DIR (prometheus-client's own variable), when set."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


@dataclass
class MethodMetrics:
    """The grpc_server_* series of one method, bound once (label lookups cost per call); in
    `Pending` form unless in multiprocess mode."""

    started: Any  # Pending | Counter
    handling: Any  # PendingHistogram | Histogram
    received: Any
    sent: Any
    _metrics: Metrics
    _labels: tuple[str, str, str]
    _by_code: dict[str, Any] = field(default_factory=dict)

    def handled(self, code: str) -> Any:
        child = self._by_code.get(code)
        if child is None:
            metrics = self._metrics
            child = self._by_code[code] = metrics.pending(metrics.grpc_handled, *self._labels, code)
        return child


APPLY_AFTER_S = 0.1
MAX_WAITING = 512


class _ApplyWaiting:
    """A collector of no series, registered first: a collection of the registry applies the
    updates still waiting before the instruments (or PROMETHEUS_MULTIPROC_DIR) are read."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterable[Metric]:
        self._metrics.apply()
        return ()


class Metrics:
    """Every Prometheus series sagewire exports, registered on `registry`.

    In multiprocess mode the instruments are registered nowhere (their values live in
    PROMETHEUS_MULTIPROC_DIR) and `registry` holds only the collector that reads them.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._waiting: Batch[tuple[Callable[..., None], tuple[Any, ...]]] = Batch(
            self._apply_updates, APPLY_AFTER_S, MAX_WAITING
        )
        self._pending: list[Pending | PendingHistogram] = []
        self._pending_by_labels: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._sources: list[Callable[[], None]] = []
        self.registry.register(_ApplyWaiting(self))
        self.multiprocess = multiprocess_dir() is not None
        reg = None if self.multiprocess else self.registry
        if self.multiprocess:
            from prometheus_client import multiprocess

            multiprocess.MultiProcessCollector(self.registry)  # type: ignore[no-untyped-call]

        # -- the grpc-ecosystem series ----------------------------------------------------
        self.grpc_started = Counter(
            "grpc_server_started", "RPCs started on the server.", GRPC_LABELS, registry=reg
        )
        self.grpc_handled = Counter(
            "grpc_server_handled",
            "RPCs completed on the server, regardless of success or failure.",
            (*GRPC_LABELS, "grpc_code"),
            registry=reg,
        )
        self.grpc_handling = Histogram(
            "grpc_server_handling_seconds",
            "Response latency (seconds) of RPCs handled by the server.",
            GRPC_LABELS,
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.grpc_received = Counter(
            "grpc_server_msg_received",
            "RPC stream messages received on the server.",
            GRPC_LABELS,
            registry=reg,
        )
        self.grpc_sent = Counter(
            "grpc_server_msg_sent", "RPC stream messages sent by the server.", GRPC_LABELS,
            registry=reg,
        )  # fmt: skip
        self._methods: dict[tuple[str, str, str], MethodMetrics] = {}
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

        # -- the REST bridge: OpenTelemetry's http.server.request.duration, as Prometheus
        # names it when converting (dots → underscores, unit suffix) ---------------------
        self.http_duration = Histogram(
            "http_server_request_duration_seconds",
            "Duration of HTTP server requests (the REST bridge), by method, route template "
            "and response status.",
            ("http_request_method", "http_route", "http_response_status_code"),
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )

        # -- routes -----------------------------------------------------------------------
        self.route_in_flight = Gauge(
            "sagewire_route_in_flight",
            "Calls holding one of the route's concurrency slots (max_concurrency) now.",
            ("model",),
            multiprocess_mode="livesum",
            registry=reg,
        )
        self.route_limit = Gauge(
            "sagewire_route_max_concurrency",
            "The route's max_concurrency (summed over processes), for in-flight / limit.",
            ("model",),
            multiprocess_mode="livesum",
            registry=reg,
        )
        self.route_concurrency_limit = Gauge(
            "sagewire_route_concurrency_limit",
            "Calls the route admits in flight now: max_concurrency, or the adaptive limit when "
            "admission.adaptive is on (summed over processes).",
            ("model",),
            multiprocess_mode="livesum",
            registry=reg,
        )
        self.route_rejections = Counter(
            "sagewire_route_rejections",
            "Calls refused by a route's own limits, by ErrorInfo reason "
            "(ROUTE_CONCURRENCY_LIMIT, ROUTE_OVERLOADED: shed by the adaptive limit, ...).",
            ("model", "reason"),
            registry=reg,
        )

        # -- SageMaker and S3 -------------------------------------------------------------
        self.upstream_requests = Counter(
            "sagewire_upstream_requests",
            "AWS API calls (SageMaker Runtime, SageMaker, S3) by operation and outcome: OK or "
            "the ErrorInfo reason the failure maps to.",
            ("model", "operation", "outcome"),
            registry=reg,
        )
        self.upstream_duration = Histogram(
            "sagewire_upstream_request_duration_seconds",
            "AWS API call latency in seconds, retries included, up to the response headers "
            "(streamed bodies are measured by sagewire_stream_*).",
            ("model", "operation"),
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.upstream_retries = Counter(
            "sagewire_upstream_retries",
            "Retries botocore made inside AWS API calls (attempts beyond the first).",
            ("model", "operation"),
            registry=reg,
        )
        self.retry_quota = Gauge(
            "sagewire_aws_retry_quota_available",
            "botocore's remaining retry quota (standard and adaptive retry modes) per AWS "
            "client; retries stop when it reaches 0. The lowest over processes.",
            ("service",),
            multiprocess_mode="livemin",
            registry=reg,
        )

        # -- resilience (docs/resilience.md) -----------------------------------------------
        self.circuit_state = Gauge(
            "sagewire_circuit_state",
            "Circuit breaker state per route and endpoint it calls: 0 closed, 1 half-open, "
            "2 open (the highest over processes; each process keeps its own breakers).",
            ("model", "endpoint"),
            multiprocess_mode="livemax",
            registry=reg,
        )
        self.circuit_transitions = Counter(
            "sagewire_circuit_transitions",
            "Circuit breaker state changes, by the state entered (open, half_open, closed).",
            ("model", "endpoint", "state"),
            registry=reg,
        )
        self.cold_start_attempts = Counter(
            "sagewire_cold_start_waits",
            "ModelNotReady answers sagewire waited out (outcome retried: another attempt "
            "followed; gave_up: the deadline or cold_start.max_wait_s ended the wait).",
            ("model", "outcome"),
            registry=reg,
        )
        self.fallback_answers = Counter(
            "sagewire_fallback_answers",
            "Calls answered by one of the route's fallback endpoints.",
            ("model", "endpoint"),
            registry=reg,
        )

        # -- streams ----------------------------------------------------------------------
        self.stream_first_part = Histogram(
            "sagewire_stream_time_to_first_part_seconds",
            "From opening a SageMaker response stream to its first part reaching sagewire.",
            ("model",),
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.stream_parts = Counter(
            "sagewire_stream_parts_relayed",
            "Stream parts relayed to callers (InvokeStream messages, streamed Converse "
            "chunks, bidirectional stream parts).",
            ("model",),
            registry=reg,
        )

        # -- Converse ---------------------------------------------------------------------
        self.converse_open = Gauge(
            "sagewire_converse_sessions_open",
            "Converse calls open now.",
            ("model",),
            multiprocess_mode="livesum",
            registry=reg,
        )
        self.converse_turns = Counter(
            "sagewire_converse_turns",
            "Converse turns finished, by outcome: OK or the turn's ErrorInfo reason.",
            ("model", "outcome"),
            registry=reg,
        )

        # -- async inference --------------------------------------------------------------
        self.async_submitted = Counter(
            "sagewire_async_jobs_submitted",
            "Async jobs accepted by InvokeEndpointAsync (SubmitAsync and UploadAsync).",
            ("model",),
            registry=reg,
        )
        self.async_finished = Counter(
            "sagewire_async_jobs_finished",
            "Terminal job states reported to callers (GetAsyncResult, WatchAsync), by state: "
            "completed, failed, expired. sagewire keeps no job table, so a job reported twice "
            "counts twice.",
            ("model", "state"),
            registry=reg,
        )
        self.uploaded_bytes = Counter(
            "sagewire_s3_uploaded_bytes",
            "Bytes sagewire staged in S3 for async inputs.",
            ("model",),
            registry=reg,
        )

    def later(self, update: Callable[..., None], *args: Any) -> None:
        """`update(*args)`, applied with the next batch (module doc); at once off an event loop."""
        if self.multiprocess:  # another process's scrape cannot apply what waits here
            update(*args)
        elif not self._waiting.add((update, args)):
            self._waiting.flush()

    def add_source(self, source: Callable[[], None]) -> None:
        """`source()` runs first in every `apply()`: it hands over what waits elsewhere (the
        finished calls of sagewire.observability.calls.Observer)."""
        self._sources.append(source)

    def apply(self) -> None:
        """Apply everything waiting: the sources' updates, `later` updates in order, then the
        pending sums."""
        for source in self._sources:
            source()
        self._waiting.flush()
        self.apply_pending()

    def apply_pending(self) -> None:
        """Add the pending sums to their instruments (one update per series)."""
        for pending in self._pending:
            try:
                pending.apply()
            except Exception:  # one bad series must not lose the rest
                _log.exception("a metric update failed: %r", pending.child)

    def _apply_updates(self, waiting: list[tuple[Callable[..., None], tuple[Any, ...]]]) -> None:
        for update, args in waiting:
            try:
                update(*args)
            except Exception:  # one bad update must not lose the rest of the batch
                _log.exception("a metric update failed: %s", getattr(update, "__name__", update))

    def pending(self, metric: Any, *labels: str) -> Any:
        """The child `metric.labels(*labels)` of a counter or gauge, as a `Pending` whose
        changes are summed until applied (the instrument's child itself in multiprocess mode).
        Remembered: bounded like the label values themselves."""
        return self._pending_child(Pending, metric, labels)

    def pending_histogram(self, metric: Any, *labels: str) -> Any:
        """`pending` for a histogram: a `PendingHistogram` (the child in multiprocess mode)."""
        return self._pending_child(PendingHistogram, metric, labels)

    def _pending_child(
        self, wrap: Callable[[Any], Any], metric: Any, labels: tuple[str, ...]
    ) -> Any:
        key = (id(metric), labels)
        found = self._pending_by_labels.get(key)
        if found is None:
            child = metric.labels(*labels)
            if self.multiprocess:
                found = child
            else:
                found = wrap(child)
                self._pending.append(found)
            self._pending_by_labels[key] = found
        return found

    def child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, remembered: prometheus-client's own lookup takes a lock and
        checks the labels on every call. Bounded like the label values themselves."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def method(self, service: str, method: str, grpc_type: str) -> MethodMetrics:
        key = (grpc_type, service, method)
        bound = self._methods.get(key)
        if bound is None:
            bound = self._methods[key] = MethodMetrics(
                started=self.pending(self.grpc_started, *key),
                handling=self.pending_histogram(self.grpc_handling, *key),
                received=self.pending(self.grpc_received, *key),
                sent=self.pending(self.grpc_sent, *key),
                _metrics=self,
                _labels=key,
            )
        return bound
