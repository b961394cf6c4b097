"""One record per call, shared by every transport: metrics, the access record, OTel metrics.

A transport's edge opens a `Call` when a call enters (`Observer.start`) and finishes it when the
call ends (`Observer.finish`); in between the call is the current one (a ContextVar, so tasks a
call starts see it too), and code below the edge adds what only it knows: the route
(`current().model`, set when a model name resolves), rejections, stream parts, AWS calls.
Nothing here knows gRPC or HTTP: the edge passes status names and sizes in.

With no metrics listener, access log or OTel meter configured the edge skips all of it
(`Observer.enabled` is False) and a call costs one attribute check.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import time
import weakref
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

from aiohttp import hdrs

from sagewire.observability.logs import add_flush_hook, current_ids
from sagewire.observability.metrics import NO_ROUTE, MethodMetrics, Metrics

access_log = logging.getLogger("sagewire.access")

HTTP = "http"  # Call.kind of HTTP requests (the REST bridge)

_current: ContextVar[Call | None] = ContextVar("sagewire_call", default=None)


# OpenTelemetry's HTTP semantic conventions: `http.request.method` is one of RFC 9110's methods
# or PATCH (aiohttp's METH_ALL), anything else `_OTHER` (a caller must not mint metric series
# with made-up methods).
_KNOWN_HTTP_METHODS = hdrs.METH_ALL


@dataclass(slots=True, eq=False)
class Call:
    """What one call did. `method` is the full name, e.g. sagewire.v1.InferenceService/Invoke."""

    observer: Observer
    service: str
    method: str
    kind: str  # grpc_type: unary, client_stream, server_stream, bidi_stream
    started: float  # time.perf_counter()
    model: str = NO_ROUTE  # the route's name once the model resolved; never a caller's string
    code: str = "OK"  # the status name (gRPC code names; HTTP transports map theirs)
    reason: str = ""  # the ErrorInfo reason of a failure
    received: int = 0  # messages
    sent: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    principal: str = ""  # the authenticated caller, once a transport knows one
    bound: MethodMetrics | None = None
    # HTTP transports (kind "http"): the request method, the route template, the status sent.
    http_method: str = ""
    http_route: str = ""
    http_status: int = 0

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


def set_principal(principal: str) -> None:
    """Name the authenticated caller in the current call's access record."""
    call = _current.get()
    if call is not None:
        call.principal = principal


class CallMeter(Protocol):
    """Records a finished call elsewhere (sagewire.observability.otel.RpcMeter)."""

    def record(self, call: Call, duration: float) -> None: ...


class Observer:
    """Per server: where calls are reported. Each part is optional."""

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
        self._access_waiting: list[tuple[Call, float, float, str, str]] = []
        if access:
            _observers.add(self)

    def start(self, service: str, method: str, kind: str) -> Call:
        """Open the record of a call to `service`'s `method` (short name, e.g. Invoke)."""
        call = Call(self, service, f"{service}/{method}", kind, time.perf_counter())
        _current.set(call)
        if self.metrics is not None:
            call.bound = bound = self.metrics.method(service, method, kind)
            self.metrics.later(bound.started.inc)
        return call

    def start_http(self, service: str, method: str, http_method: str, route: str) -> Call:
        """Open the record of an HTTP request transcoded to `service`'s `method`; `route` is
        the path template (e.g. /v1/models/{model}:invoke), never the requested path."""
        name = f"{service}/{method}" if service else ""  # "": no route matched
        call = Call(self, service, name, HTTP, time.perf_counter())
        call.http_method = http_method if http_method in _KNOWN_HTTP_METHODS else "_OTHER"
        call.http_route = route
        _current.set(call)
        return call

    def finish(self, call: Call) -> None:
        duration = time.perf_counter() - call.started
        metrics = self.metrics
        if metrics is not None:
            if call.kind == HTTP:
                labels = (call.http_method, call.http_route, str(call.http_status))
                metrics.later(_http_finished, metrics, labels, duration)
            if call.bound is not None:
                metrics.later(
                    _grpc_finished, call.bound, call.code, duration, call.received, call.sent
                )
        if self.meter is not None:
            self.meter.record(call, duration)
        if self.access and access_log.isEnabledFor(logging.INFO):
            # The record is made and logged with others, within ACCESS_AFTER_S: between the
            # rest of a call's work, with the caches full of that, the logging module's path
            # costs several times what it costs in a batch (docs/benchmarks.md,
            # observability). Its time and trace ids are the call's end.
            waiting = self._access_waiting
            waiting.append((call, duration, time.time(), *current_ids()))
            if len(waiting) == 1:
                try:
                    asyncio.get_running_loop().call_later(ACCESS_AFTER_S, self.write_access)
                except RuntimeError:  # no loop running: now
                    self.write_access()
            elif len(waiting) >= MAX_ACCESS_WAITING:
                self.write_access()

    def write_access(self) -> None:
        """Log the access records still waiting (also at exit: `write_waiting`)."""
        waiting, self._access_waiting = self._access_waiting, []
        for call, duration, ended, trace_id, span_id in waiting:
            try:
                _access_record(call, duration, ended, trace_id, span_id)
            except Exception:  # one bad record must not lose the rest of the batch
                logging.getLogger("sagewire").exception("an access record failed: %s", call.method)


# Access records wait at most this long, or until this many wait (Observer.finish).
ACCESS_AFTER_S = 0.05
MAX_ACCESS_WAITING = 256
_observers: weakref.WeakSet[Observer] = weakref.WeakSet()


def write_waiting() -> None:
    """Log every access record still waiting, in every observer (at exit, before a process
    ends by os._exit, and where a test reads records as soon as a call returned)."""
    for observer in list(_observers):
        observer.write_access()


atexit.register(write_waiting)  # runs before logging's own shutdown (registered earlier)
add_flush_hook(write_waiting)  # logs.flush()


def _http_finished(metrics: Metrics, labels: tuple[str, str, str], duration: float) -> None:
    metrics.child(metrics.http_duration, *labels).observe(duration)


def _grpc_finished(
    bound: MethodMetrics, code: str, duration: float, received: int, sent: int
) -> None:
    bound.handled(code).inc()
    bound.handling.observe(duration)
    if received:
        bound.received.inc(received)
    if sent:
        bound.sent.inc(sent)


def _access_record(call: Call, duration: float, ended: float, trace_id: str, span_id: str) -> None:
    """One line per call: never payloads, metadata values or tokens (only sizes and names).
    `ended`: time.time() when the call ended, the record's time."""
    access: dict[str, object] = {
        "method": call.method,
        "model": call.model,
        "status": call.code,
        "reason": call.reason,
        "duration_ms": round(duration * 1e3, 3),
        "bytes_in": call.bytes_in,
        "bytes_out": call.bytes_out,
    }
    if call.http_status:
        access["http_status"] = call.http_status
    if call.principal:
        access["principal"] = call.principal
    args = (
        call.method or "-",  # "-": a request no route matched
        call.model or "-",
        call.code,
        f" ({call.reason})" if call.reason else "",
        duration * 1e3,
        call.bytes_in,
        call.bytes_out,
    )
    # What Logger.info does (makeRecord, then handle), with the call's own time and trace ids.
    record = access_log.makeRecord(
        access_log.name, logging.INFO, "(unknown file)", 0, _ACCESS_MESSAGE, args, None,
        extra={"access": access, "trace_id": trace_id, "span_id": span_id},
    )  # fmt: skip
    record.created = ended
    record.msecs = (ended - int(ended)) * 1000
    access_log.handle(record)


_ACCESS_MESSAGE = "%s model=%s -> %s%s in %.1f ms (%d B in, %d B out)"
