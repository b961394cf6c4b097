"""One record per call, shared by every transport: metrics, the access record, OTel metrics.

A transport's edge opens a `Call` when a call enters (`Observer.start`) and finishes it when the
call ends (`Observer.finish`); in between the call is the current one (a ContextVar, so tasks a
call starts see it too), and code below the edge adds what only it knows: the route
(`current().model`, set when a model name resolves), rejections, stream parts, AWS calls.
Nothing here knows gRPC or HTTP: the edge passes status names and sizes in.

With no metrics listener, access log or OTel meter configured the edge skips all of it
(`Observer.enabled` is False) and a call costs one attribute check.

A call adds one entry (its `Call`) to a batch; its series, access record and OTel measurement
are made from that entry when the batch is applied (`Observer`), never one by one.
"""

from __future__ import annotations

import atexit
import logging
import time
import weakref
from collections.abc import Iterable
from contextvars import ContextVar
from functools import cache
from typing import Any, Protocol

from aiohttp import hdrs
from google.protobuf import descriptor_pool
from opentelemetry import context as otel_context

from sagewire import telemetry
from sagewire.observability.access import access_log, write_records
from sagewire.observability.batches import Batch
from sagewire.observability.logs import add_flush_hook, current_ids
from sagewire.observability.metrics import NO_ROUTE, MethodMetrics, Metrics

HTTP = "http"  # Call.kind of HTTP requests (the REST bridge)

_current: ContextVar[Call | None] = ContextVar("sagewire_call", default=None)


# OpenTelemetry's HTTP semantic conventions: `http.request.method` is one of RFC 9110's methods
# or PATCH (aiohttp's METH_ALL), anything else `_OTHER` (a caller must not mint metric series
# with made-up methods).
_KNOWN_HTTP_METHODS = hdrs.METH_ALL


class Site:
    """What every call of one method shares: names, grpc_type and its bound series."""

    __slots__ = ("bound", "kind", "method", "service")

    def __init__(self, service: str, method: str, kind: str, bound: MethodMetrics | None) -> None:
        self.service = service
        self.method = method  # the full name, e.g. sagewire.v1.InferenceService/Invoke
        self.kind = kind  # grpc_type: unary, client_stream, server_stream, bidi_stream; or http
        self.bound = bound


class Call:
    """What one call did: the one entry per call that its series, its access record and the
    OTel meter are made from, when its batch is applied (`Observer.finish`).

    A plain class whose defaults live on the class: opening a call sets three attributes."""

    model: str = NO_ROUTE  # the route's name once the model resolved; never a caller's string
    code: str = "OK"  # the status name (gRPC code names; HTTP transports map theirs)
    reason: str = ""  # the ErrorInfo reason of a failure
    received: int = 0  # messages
    sent: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    principal: str = ""  # the authenticated caller, once a transport knows one
    # HTTP transports (kind "http"): the request method, the route template, the status sent.
    http_method: str = ""
    http_route: str = ""
    http_status: int = 0
    # Set when the call ends (Observer.finish).
    duration: float = 0.0  # seconds
    ended: float = 0.0  # time.time(), when an access record is to be logged
    trace_id: str = ""
    span_id: str = ""
    # The OpenTelemetry context it ended in (its span), for the meter's exemplars: the batch is
    # applied outside it. None with tracing off.
    otel_context: Any = None
    # AWS calls made for it: (service, retry quota, operation, outcome, seconds, retries).
    upstream: list[tuple[str, Any, str, str, float, int]] | None = None
    applied: bool = False  # its batch was applied: later reports go their own way

    def __init__(self, observer: Observer, site: Site, started: float) -> None:
        self.observer = observer
        self.site = site
        self.started = started  # time.perf_counter()

    @property
    def service(self) -> str:
        return self.site.service

    @property
    def method(self) -> str:
        return self.site.method

    @property
    def kind(self) -> str:
        return self.site.kind

    @property
    def metrics(self) -> Metrics | None:
        return self.observer.metrics


def current() -> Call | None:
    """The call the running code serves, if any (None outside calls and when observing is off)."""
    return _current.get()


def current_metrics() -> tuple[Metrics, str] | None:
    """The current call's metrics and model label, when metrics are on."""
    call = _current.get()
    if call is None or call.observer.metrics is None:
        return None
    return call.observer.metrics, call.model


def set_model(label: str) -> None:
    """Name the route the current call uses (sagewire.core.routes calls it on resolve)."""
    call = _current.get()
    if call is not None:
        call.model = label


def failed(code: str, reason: str) -> None:
    """The current call failed with this status code name and ErrorInfo reason."""
    call = _current.get()
    if call is not None:
        call.code = code
        call.reason = reason


def traced() -> None:
    """The current call's SERVER span is the current span now: its access record and OTel
    measurement name it, for a transport that finishes the call's record outside the span
    (the REST bridge: its record also covers the security layer and routing)."""
    call = _current.get()
    if call is not None and telemetry.tracing():
        call.trace_id, call.span_id = current_ids()
        call.otel_context = otel_context.get_current()


def set_principal(principal: str) -> None:
    """Name the authenticated caller in the current call's access record."""
    call = _current.get()
    if call is not None:
        call.principal = principal


@cache
def grpc_type(service: str, method: str) -> str:
    """go-grpc-prometheus's grpc_type of a method, from its descriptor (generated code is
    imported before any call, so the default pool has it)."""
    found = descriptor_pool.Default().FindServiceByName(service).FindMethodByName(method)
    if found.client_streaming:
        return "bidi_stream" if found.server_streaming else "client_stream"
    return "server_stream" if found.server_streaming else "unary"


class CallMeter(Protocol):
    """Records a finished call elsewhere (sagewire.observability.otel.RpcMeter)."""

    def record(self, call: Call, duration: float) -> None: ...


class Observer:
    """Per server: where calls are reported. Each part is optional.

    A finished call waits (`Batch`: at most `ACCESS_AFTER_S`, `MAX_ACCESS_WAITING` calls) and
    its batch is applied at once: metrics (summed per series), OTel meter, access records, in
    the order the calls ended. A scrape applies what waits first (Metrics.add_source), and so
    does a WARNING or worse log line (logs.add_flush_hook), so it follows the access records of
    the calls that ended before it. In multiprocess mode a call's metrics are applied when it
    ends (another process's scrape could not apply them)."""

    def __init__(
        self,
        metrics: Metrics | None = None,
        access: bool = False,
        meter: CallMeter | None = None,
    ) -> None:
        self.metrics = metrics
        self.access = access
        self.meter = meter
        self.enabled = metrics is not None or access or meter is not None
        self._sites: dict[tuple[str, str], Site] = {}
        self._http_sites: dict[tuple[str, str], Site] = {}
        self._finished: Batch[Call] = Batch(self._apply, ACCESS_AFTER_S, MAX_ACCESS_WAITING)
        # Metrics applied at once (multiprocess mode), not with the batch.
        self._metrics_at_once = metrics is not None and metrics.multiprocess
        if metrics is not None:
            metrics.add_source(self.write_access)
        if self.enabled:
            _observers.add(self)

    def _site(self, service: str, method: str, kind: str | None) -> Site:
        if kind is None:
            kind = grpc_type(service, method)
        bound = self.metrics.method(service, method, kind) if self.metrics is not None else None
        site = self._sites[service, method] = Site(service, f"{service}/{method}", kind, bound)
        return site

    def start(self, service: str, method: str, kind: str | None = None) -> Call:
        """Open the record of a call to `service`'s `method` (short name, e.g. Invoke);
        `kind` is its grpc_type (default: from the method's descriptor)."""
        site = self._sites.get((service, method)) or self._site(service, method, kind)
        call = Call(self, site, time.perf_counter())
        _current.set(call)
        if site.bound is not None:
            site.bound.started.inc()
        return call

    def start_http(self, service: str, method: str, http_method: str, route: str) -> Call:
        """Open the record of an HTTP request transcoded to `service`'s `method`; `route` is
        the path template (e.g. /v1/models/{model}:invoke), never the requested path."""
        site = self._http_sites.get((service, method))
        if site is None:
            name = f"{service}/{method}" if service else ""  # "": no route matched
            site = self._http_sites[service, method] = Site(service, name, HTTP, None)
        call = Call(self, site, time.perf_counter())
        call.http_method = http_method if http_method in _KNOWN_HTTP_METHODS else "_OTHER"
        call.http_route = route
        _current.set(call)
        return call

    def finish(self, call: Call) -> None:
        """The call ended: it waits for its batch (the class doc). What the transport adds to
        it after this, before the batch is applied, still counts."""
        call.duration = time.perf_counter() - call.started
        if self.access and access_log.isEnabledFor(logging.INFO):
            call.ended = time.time()  # the access record's time (0.0: no record)
            if telemetry.tracing() and not call.trace_id:  # else named in its span (`traced`)
                call.trace_id, call.span_id = current_ids()
        if self.meter is not None and telemetry.tracing() and call.otel_context is None:
            call.otel_context = otel_context.get_current()
        if self._metrics_at_once:  # multiprocess mode: its series are the instruments'
            _tally(self.metrics, (call,))  # type: ignore[arg-type]
        if not self._finished.add(call):  # no event loop: now
            self._finished.flush()

    def write_access(self) -> None:
        """Apply the calls still waiting: metrics, OTel meter, access records (also at exit:
        `write_waiting`, and before a scrape)."""
        self._finished.flush()

    def _apply(self, finished: list[Call]) -> None:
        for call in finished:
            call.applied = True
        metrics = self.metrics
        if metrics is not None and not self._metrics_at_once:
            try:
                _tally(metrics, finished)
            except Exception:  # metrics must not lose the access records
                logging.getLogger("sagewire.metrics").exception("a metric update failed")
            metrics.apply_pending()
        if self.meter is not None:
            try:
                for call in finished:
                    self.meter.record(call, call.duration)
            except Exception:  # nor must the OTel meter
                logging.getLogger("sagewire").exception("an OTel measurement failed")
        if self.access:
            write_records(finished)


# Finished calls wait at most this long, or until this many wait (Observer.finish).
ACCESS_AFTER_S = 0.05
MAX_ACCESS_WAITING = 256
_observers: weakref.WeakSet[Observer] = weakref.WeakSet()


def write_waiting() -> None:
    """Apply every finished call still waiting, in every observer: its metrics and access
    record (at exit, before a process ends by os._exit, and where a test reads records as soon
    as a call returned)."""
    for observer in list(_observers):
        observer.write_access()


def _write_waiting_here() -> None:
    """`write_waiting` for the observers whose calls wait on this thread's event loop (the
    log handler's hook before a WARNING line: no other thread's batch is touched)."""
    for observer in list(_observers):
        if observer._finished.here():
            observer.write_access()


atexit.register(write_waiting)  # runs before logging's own shutdown (registered earlier)
add_flush_hook(write_waiting, before_warning=_write_waiting_here)  # logs.flush(), WARNING lines


def upstream(
    service: str, quota: Any, operation: str, outcome: str, seconds: float, retries: int
) -> None:
    """One AWS call made for the current call: added to its entry (applied with its batch),
    or queued on its own when the entry is gone (its batch was applied) or in multiprocess
    mode. Nothing outside a call or with metrics off."""
    call = _current.get()
    if call is None:
        return
    metrics = call.observer.metrics
    if metrics is None:
        return
    if call.applied or call.observer._metrics_at_once:
        metrics.later(
            upstream_series, metrics, call.model, service, quota, operation, outcome, seconds,
            retries,
        )  # fmt: skip
        return
    entry = (service, quota, operation, outcome, seconds, retries)
    if call.upstream is None:
        call.upstream = [entry]
    else:
        call.upstream.append(entry)


def _tally(metrics: Metrics, finished: Iterable[Call]) -> None:
    """Every series of the finished calls, into the metrics' pending sums."""
    quotas: dict[str, Any] = {}
    upstream: dict[tuple[str, str, str], tuple[Any, Any]] = {}  # this batch's series
    for call in finished:
        bound = call.site.bound
        if bound is not None:
            bound.handled(call.code).inc()
            bound.handling.observe(call.duration)
            if call.received:
                bound.received.inc(call.received)
            if call.sent:
                bound.sent.inc(call.sent)
        elif call.site.kind == HTTP:
            labels = (call.http_method, call.http_route, str(call.http_status))
            metrics.pending_histogram(metrics.http_duration, *labels).observe(call.duration)
        if call.upstream is not None:
            model = call.model
            for service, quota, operation, outcome, seconds, retries in call.upstream:
                key = (model, operation, outcome)
                series = upstream.get(key)
                if series is None:
                    series = upstream[key] = (
                        metrics.pending(metrics.upstream_requests, *key),
                        metrics.pending_histogram(metrics.upstream_duration, model, operation),
                    )
                series[0].inc()
                series[1].observe(seconds)
                if retries:
                    metrics.pending(metrics.upstream_retries, model, operation).inc(retries)
                if quota is not None:
                    quotas[service] = quota
    for service, quota in quotas.items():  # what is left now, once per client
        metrics.child(metrics.retry_quota, service).set(quota.available_capacity)


def upstream_series(
    metrics: Metrics,
    model: str,
    service: str,
    quota: Any,
    operation: str,
    outcome: str,
    seconds: float,
    retries: int,
) -> None:
    """One AWS call's series (sagewire.aws.instrumented reports them)."""
    metrics.pending(metrics.upstream_requests, model, operation, outcome).inc()
    metrics.pending_histogram(metrics.upstream_duration, model, operation).observe(seconds)
    if retries:
        metrics.pending(metrics.upstream_retries, model, operation).inc(retries)
    if quota is not None:  # the quota left now
        metrics.child(metrics.retry_quota, service).set(quota.available_capacity)
