"""Every AWS API call observed in one place: a CLIENT span, the upstream metrics, retries.

`InstrumentedClient` wraps an aiobotocore client. Each API method called through it
(`invoke_endpoint`, `put_object`, ...) gets:
- a CLIENT span, child of the current (RPC SERVER) span, named `<Service>.<Operation>` with the
  attributes of the OpenTelemetry botocore instrumentation (rpc.system `aws-api`, rpc.service,
  rpc.method, cloud.region, server.address, aws.request_id, http.response.status_code,
  retry_attempts) plus the SageMaker endpoint or S3 bucket; never bodies, keys or attributes;
- `sagewire_upstream_requests_total{model,operation,outcome}`, the latency histogram and
  retries, with the outcome as the ErrorInfo reason the failure maps to (sagewire.aws.errors);
- `sagewire_aws_retry_quota_available{service}` after the call.

Why our own wrapper: opentelemetry-instrumentation-botocore covered only botocore's sync
client until 0.62b0 (open-telemetry/opentelemetry-python-contrib PR #4049) and is not a
dependency here; the metrics need the route and sagewire's outcome vocabulary anyway. A span
ends when botocore returns (response headers parsed), as in that instrumentation; streamed
bodies are measured by the stream metrics. Retries are counted on botocore's `before-send`
event, so connection failures that were retried count too.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from sagewire import telemetry
from sagewire.aws.errors import map_aws_error, map_s3_error
from sagewire.core.async_types import S3Location
from sagewire.core.errors import SagewireError
from sagewire.observability import calls

_tracer = trace.get_tracer("sagewire.aws")
# Sends of the API call in progress in this task (botocore emits before-send per attempt).
_sends: ContextVar[list[int] | None] = ContextVar("sagewire_aws_sends", default=None)


def _count_send(**_: Any) -> None:
    sends = _sends.get()
    if sends is not None:
        sends[0] += 1
    # None: botocore must go on and send (a value here would stand in for the response).


def retry_quota(client: Any) -> Any:
    """botocore's RetryQuota of `client` (standard and adaptive modes), or None.

    botocore keeps it only inside its `needs-retry` handler; this reads those private
    attributes and gives up quietly when a botocore version moves them.
    """
    try:
        emitter = client.meta.events._emitter
        for entry in emitter._unique_id_handlers.values():
            owner = getattr(entry.get("handler"), "__self__", None)
            checker = getattr(owner, "_retry_quota", None)
            quota = getattr(checker, "_quota", None)
            if quota is not None and hasattr(quota, "available_capacity"):
                return quota
    except (AttributeError, TypeError):
        pass
    return None


def _outcome(service: str, exc: BaseException, params: dict[str, Any]) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "CANCELLED"
    if service == "s3":
        location = S3Location(str(params.get("Bucket", "")), str(params.get("Key", "")))
        return map_s3_error(exc, location).reason
    return map_aws_error(exc, str(params.get("EndpointName", ""))).reason


class InstrumentedClient:
    """An aiobotocore client whose API calls are observed; everything else passes through."""

    def __init__(self, client: Any, service: str) -> None:
        self._client = client
        self._service = service
        meta = client.meta
        self._operations: dict[str, str] = dict(meta.method_to_api_mapping)
        self._service_id = str(meta.service_model.service_id)
        self._region = str(meta.region_name or "")
        self._address = urlsplit(meta.endpoint_url).hostname or ""
        self._quota = retry_quota(client)
        meta.events.register(
            f"before-send.{meta.service_model.service_id.hyphenize()}", _count_send
        )

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        operation = self._operations.get(name)
        if operation is None:
            return attribute
        bound = functools.partial(self._call, operation, attribute)
        self.__dict__[name] = bound  # found directly from now on
        return bound

    def _span(self, operation: str, params: dict[str, Any]) -> trace.Span | None:
        return _start_span(self._service_id, operation, self._region, self._address, params)

    async def _call(self, operation: str, method: Any, /, **params: Any) -> Any:
        span = self._span(operation, params)
        sends = [0]
        token = _sends.set(sends)
        started = time.perf_counter()
        outcome = "OK"
        response: Any = None
        try:
            response = await method(**params)
            return response
        except BaseException as exc:
            outcome = _outcome(self._service, exc, params)
            response = getattr(exc, "response", None)
            raise
        finally:
            _sends.reset(token)
            retries = max(sends[0] - 1, 0)
            self._report(operation, outcome, time.perf_counter() - started, retries)
            if span is not None:
                _end_span(span, outcome, retries, response)

    def _report(self, operation: str, outcome: str, seconds: float, retries: int) -> None:
        report_upstream(self._service, self._quota, operation, outcome, seconds, retries)


def _start_span(
    service_id: str, operation: str, region: str, address: str, params: dict[str, Any]
) -> trace.Span | None:
    if not telemetry.tracing():
        return None
    attributes: dict[str, str] = {
        "rpc.system": "aws-api",
        "rpc.service": service_id,
        "rpc.method": operation,
        "cloud.region": region,
        "server.address": address,
    }
    if "EndpointName" in params:
        attributes["aws.sagemaker.endpoint_name"] = str(params["EndpointName"])
    if "Bucket" in params:
        attributes["aws.s3.bucket"] = str(params["Bucket"])
    return _tracer.start_span(
        f"{service_id}.{operation}", kind=SpanKind.CLIENT, attributes=attributes
    )


def report_upstream(
    service: str, quota: Any, operation: str, outcome: str, seconds: float, retries: int
) -> None:
    """One AWS call's series, with the current call's batch (sagewire.observability.calls)."""
    calls.upstream(service, quota, operation, outcome, seconds, retries)


class Observed:
    """One AWS call observed by `ObservedCalls.call` (a context manager; a class rather than
    @contextmanager, which costs a generator per call). Its block tells it the sends made and
    the botocore-shaped response (its ResponseMetadata) once known."""

    __slots__ = ("_calls", "_operation", "_params", "_span", "_started", "response", "sends")

    def __init__(self, calls: ObservedCalls, operation: str, params: dict[str, Any]) -> None:
        self._calls = calls
        self._operation = operation
        self._params = params
        self.sends = 1
        self.response: dict[str, Any] | None = None

    def __enter__(self) -> Observed:
        owner = self._calls
        self._span = _start_span(
            owner._service_id, self._operation, owner._region, owner._address, self._params
        )
        self._started = time.perf_counter()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _: Any) -> None:
        owner = self._calls
        if exc is None:
            outcome = "OK"
        elif isinstance(exc, asyncio.CancelledError):
            outcome = "CANCELLED"
        elif isinstance(exc, SagewireError):
            outcome = exc.reason
        else:
            outcome = _outcome(owner._service, exc, self._params)
        retries = max(self.sends - 1, 0)
        seconds = time.perf_counter() - self._started
        report_upstream(owner._service, owner._quota, self._operation, outcome, seconds, retries)
        if self._span is not None:
            _end_span(self._span, outcome, retries, self.response)


class ObservedCalls:
    """The same CLIENT span and upstream metrics as `InstrumentedClient`, for calls sent
    without botocore's client (the lean SageMaker Runtime path, sagewire.aws.lean)."""

    def __init__(
        self, service: str, service_id: str, region: str, endpoint_url: str, quota: Any
    ) -> None:
        self._service = service
        self._service_id = service_id
        self._region = region
        self._address = urlsplit(endpoint_url).hostname or ""
        self._quota = quota

    def call(self, operation: str, params: dict[str, Any]) -> Observed:
        """Observe the `with` block: it ends when the answer's headers are in (as botocore
        returns), with the outcome OK or the ErrorInfo reason of what it raised."""
        return Observed(self, operation, params)


@contextmanager
def manual_call(service_id: str, operation: str, attributes: dict[str, str]) -> Iterator[None]:
    """A CLIENT span and the upstream metrics for an AWS call made without botocore (the
    HTTP/2 SDK's bidirectional stream): the span and the latency cover the whole block, the
    outcome is OK or the ErrorInfo reason of the SagewireError that ends it."""
    span = None
    if telemetry.tracing():
        span = _tracer.start_span(
            f"{service_id}.{operation}",
            kind=SpanKind.CLIENT,
            attributes={
                "rpc.system": "aws-api",
                "rpc.service": service_id,
                "rpc.method": operation,
                **attributes,
            },
        )
    started = time.perf_counter()
    outcome = "OK"
    try:
        yield
    except BaseException as exc:
        outcome = _manual_outcome(exc)
        raise
    finally:
        report_upstream("", None, operation, outcome, time.perf_counter() - started, 0)
        if span is not None:
            _end_span(span, outcome, 0, None)


def _manual_outcome(exc: BaseException) -> str:
    if isinstance(exc, SagewireError):
        return exc.reason
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return "CANCELLED"
    return "INTERNAL"


def _end_span(span: trace.Span, outcome: str, retries: int, response: Any) -> None:
    span.set_attribute("retry_attempts", retries)
    span.set_attribute("sagewire.upstream.outcome", outcome)
    metadata = response.get("ResponseMetadata") if isinstance(response, dict) else None
    if isinstance(metadata, dict):
        if "HTTPStatusCode" in metadata:
            span.set_attribute("http.response.status_code", int(metadata["HTTPStatusCode"]))
        if metadata.get("RequestId"):
            span.set_attribute("aws.request_id", str(metadata["RequestId"]))
    if outcome != "OK":
        span.set_status(Status(StatusCode.ERROR, outcome))
    span.end()
