"""OpenTelemetry over OTLP and JSON logs, from sagewire as a process to a collector the test runs;
and, on the same `sagewire local` process (its start is the costly part), docs/observability.md's
curl command for /metrics, run as printed but for the port.

The collector is a grpc.aio server implementing OTLP's TraceService and MetricsService (the
opentelemetry-proto definitions): sagewire's own exporters, configured only by the standard
OTEL_* variables, send to it over a real socket.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import tomllib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import pytest
import pytest_asyncio
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from processes import REPO, sagewire_process

from sagewire.v1 import async_jobs_pb2, converse_pb2, inference_service_pb2_grpc, invoke_pb2

pytestmark = pytest.mark.e2e

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
# The async job (S3 staging) and the HTTP/2 bidirectional stream, each in its own trace.
ASYNC_TRACE = "5bf92f3577b34da6a3ce929d0e0e4737"
BIDI_TRACE = "6bf92f3577b34da6a3ce929d0e0e4738"
SECRET = "hunter2-never-exported"
# Calls in traces of their own, OK ones (a...) and NOT_FOUND ones (b...), made in quick
# succession so that several end within one batch of observed calls.
EXEMPLAR_TRACES = {
    code: [f"{prefix}{i:031x}" for i in range(1, 13)] for code, prefix in ((0, "a"), (5, "b"))
}
# The REST bridge's calls.
REST_TRACE = "7bf92f3577b34da6a3ce929d0e0e4739"
# The last call (OK), made right before SIGTERM.
LAST_TRACE = f"a{13:031x}"


class Collector(
    trace_service_pb2_grpc.TraceServiceServicer, metrics_service_pb2_grpc.MetricsServiceServicer
):
    """Keeps every export request it receives."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.metrics: list[metrics_service_pb2.ExportMetricsServiceRequest] = []

    async def Export(self, request: Any, context: Any) -> Any:
        if isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    self.spans.extend(scope.spans)
            return trace_service_pb2.ExportTraceServiceResponse()
        self.metrics.append(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


class _Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, collector: Collector) -> None:
        self._collector = collector

    async def Export(self, request: Any, context: Any) -> Any:
        return await self._collector.Export(request, context)


@pytest_asyncio.fixture
async def collector() -> AsyncIterator[tuple[Collector, int]]:
    found = Collector()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(found, server)  # type: ignore[no-untyped-call]
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(  # type: ignore[no-untyped-call]
        _Metrics(found), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield found, port
    await server.stop(None)


def attributes(items: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        assert isinstance(item, KeyValue)
        value = item.value
        out[item.key] = getattr(value, value.WhichOneof("value") or "string_value")
    return out


async def _calls(target: str, rest_url: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = inference_service_pb2_grpc.InferenceServiceStub(channel)
        await stub.Invoke(
            invoke_pb2.InvokeRequest(model="echo", body=json.dumps({"p": SECRET}).encode()),
            metadata=(("traceparent", PARENT),),
            timeout=30,
        )
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Invoke(invoke_pb2.InvokeRequest(model="nope", body=b"{}"), timeout=30)
        for ok, missing in zip(*EXEMPLAR_TRACES.values(), strict=True):
            await stub.Invoke(
                invoke_pb2.InvokeRequest(model="echo", body=b"{}"),
                metadata=(("traceparent", f"00-{ok}-00f067aa0ba902b7-01"),),
                timeout=30,
            )
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Invoke(
                    invoke_pb2.InvokeRequest(model="nope", body=b"{}"),
                    metadata=(("traceparent", f"00-{missing}-00f067aa0ba902b7-01"),),
                    timeout=30,
                )
        await stub.SubmitAsync(
            async_jobs_pb2.SubmitAsyncRequest(model="slow-echo", body=b'{"a": 1}'),
            metadata=(("traceparent", f"00-{ASYNC_TRACE}-00f067aa0ba902b7-01"),),
            timeout=30,
        )
        converse = stub.Converse(
            iter(
                [
                    converse_pb2.ConverseRequest(open=converse_pb2.ConverseOpen(model="bidi-echo")),
                    converse_pb2.ConverseRequest(
                        turn=converse_pb2.ConverseTurn(turn_id="t1", text="hello")
                    ),
                    converse_pb2.ConverseRequest(close=converse_pb2.ConverseClose()),
                ]
            ),
            metadata=(("traceparent", f"00-{BIDI_TRACE}-00f067aa0ba902b7-01"),),
            timeout=60,
        )
        answers = [answer async for answer in converse]
        assert any(a.WhichOneof("kind") == "chunk" for a in answers)
    async with aiohttp.ClientSession() as http:
        posts: list[tuple[str, dict[str, Any]]] = [
            ("/v1/models/echo:invoke", {"json": {}}),  # transcoded
            ("/v1/models/echo/invocations", {}),  # the bridge's own route (rest.edge)
        ]
        for path, body in posts:
            traceparent = f"00-{REST_TRACE}-00f067aa0ba902b7-01"
            async with http.post(
                rest_url + path, json=body, headers={"traceparent": traceparent}
            ) as answer:
                assert answer.status == 200


def _run_the_docs_curl(metrics_url: str) -> None:
    """The ```sh block of docs/observability.md's metrics section, against this process."""
    doc = (REPO / "docs" / "observability.md").read_text()
    block = re.search(r"```sh\n(curl [^\n]*/metrics[^\n]*)\n```", doc)
    assert block is not None
    printed = "http://127.0.0.1:9464/metrics"
    assert printed in block.group(1)
    # `make run` listens where the docs say.
    local = tomllib.loads((REPO / "config" / "local.toml").read_text())
    assert f"http://{local['telemetry']['metrics_listen']}/metrics" == printed
    out = subprocess.run(
        ["bash", "-c", block.group(1).replace(printed, metrics_url)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    lines = out.splitlines()
    assert lines
    assert all(line.startswith("grpc_server_handled_total{") for line in lines)
    assert any('grpc_method="Invoke"' in line and 'grpc_code="NOT_FOUND"' in line for line in lines)


def _points(found: Collector) -> list[dict[str, Any]]:
    """The data points of every rpc.server.call.duration received, in order."""
    points: list[dict[str, Any]] = []
    for request in found.metrics:
        for resource in request.resource_metrics:
            assert attributes(resource.resource.attributes)["service.name"] == "sagewire-otlp-test"
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name in ("rpc.server.call.duration", "http.server.request.duration"):
                        assert metric.unit == "s"
                    if metric.name == "rpc.server.call.duration":
                        points += [
                            {
                                **attributes(p.attributes),
                                "count": p.count,
                                "exemplars": [
                                    (e.trace_id.hex(), e.span_id.hex()) for e in p.exemplars
                                ],
                            }
                            for p in metric.histogram.data_points
                        ]
    return points


def _check_s3_and_bidi_spans(found: Collector) -> None:
    """S3 calls (an async input staged) and the HTTP/2 SDK's bidirectional stream have their
    CLIENT spans under the RPC's SERVER span, as SageMaker calls through botocore do."""
    for trace_id, method, calls in (
        (ASYNC_TRACE, "SubmitAsync", {"S3.PutObject", "SageMaker Runtime.InvokeEndpointAsync"}),
        (
            BIDI_TRACE,
            "Converse",
            {"SageMaker Runtime.InvokeEndpointWithBidirectionalStream"},
        ),
    ):
        spans = [s for s in found.spans if s.trace_id.hex() == trace_id]
        rpc = [s for s in spans if s.kind == Span.SPAN_KIND_SERVER]
        assert [s.name for s in rpc] == [f"sagewire.v1.InferenceService/{method}"]
        below = [s for s in spans if s.kind == Span.SPAN_KIND_CLIENT]
        assert {s.name for s in below} == calls
        for span in below:
            assert span.parent_span_id == rpc[0].span_id
            assert attributes(span.attributes)["rpc.system"] == "aws-api"
            assert span.status.code != span.status.STATUS_CODE_ERROR
    s3 = next(s for s in found.spans if s.name == "S3.PutObject")
    assert attributes(s3.attributes)["aws.s3.bucket"]
    bidi = next(s for s in found.spans if s.name.endswith("WithBidirectionalStream"))
    assert attributes(bidi.attributes)["aws.sagemaker.endpoint_name"] == "bidi-echo"


def _check_exemplars(found: Collector, points: list[dict[str, Any]]) -> None:
    """Each exemplar of rpc.server.call.duration names the SERVER span of a call that data
    point counted: calls are measured in batches after they end, and every call of a batch once
    carried the trace of the call that started the batch."""
    servers = {
        span.trace_id.hex(): span.span_id.hex()
        for span in found.spans
        if span.kind == Span.SPAN_KIND_SERVER and span.name.endswith("/Invoke")
    }
    own = {0: [*EXEMPLAR_TRACES[0], LAST_TRACE], 5: EXEMPLAR_TRACES[5]}
    for code, traces in own.items():
        # Every export's (the SDK hands each exemplar to one collection only).
        exemplars = {
            exemplar
            for p in points
            if p["rpc.method"] == "Invoke" and p["rpc.grpc.status_code"] == code
            for exemplar in p["exemplars"]
        }
        others = {t for c, ts in own.items() if c != code for t in ts}
        for trace_id, span_id in exemplars:
            assert trace_id not in others, (code, trace_id)
            assert servers[trace_id] == span_id
        # The last call of each code is in its bucket's exemplar (a bucket keeps the last).
        assert {trace_id for trace_id, _ in exemplars} & set(traces)


async def test_spans_metrics_and_json_logs(collector: tuple[Collector, int]) -> None:
    found, port = collector
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        # Nothing is due before the end: what arrives was exported on SIGTERM.
        "OTEL_METRIC_EXPORT_INTERVAL": "600000",
        "OTEL_BSP_SCHEDULE_DELAY": "600000",
        "OTEL_SERVICE_NAME": "sagewire-otlp-test",
        "SAGEWIRE_SERVER__LOG_FORMAT": "json",
    }
    with sagewire_process("local", "--config", "config/local.toml", env=env) as process:
        await _calls(process.target, process.rest_url)
        _run_the_docs_curl(process.metrics_url)
        assert not found.spans
        assert not found.metrics
        # The last call ends just before SIGTERM: it is measured in a batch after it ended,
        # and that batch must reach the export on SIGTERM too.
        async with grpc.aio.insecure_channel(process.target) as channel:
            stub = inference_service_pb2_grpc.InferenceServiceStub(channel)
            await stub.Invoke(
                invoke_pb2.InvokeRequest(model="echo", body=b"{}"),
                metadata=(("traceparent", f"00-{LAST_TRACE}-00f067aa0ba902b7-01"),),
                timeout=30,
            )
            # SIGTERM: sagewire exports what is pending, then exits (waiting in a thread, so
            # the collector on this loop can take the export meanwhile).
            assert await asyncio.to_thread(process.stop) == 0
        log = list(process.log)

    # A SERVER span continuing the caller's trace, and under it a CLIENT span for the
    # SageMaker call with its endpoint, operation, status and retries.
    ours = [s for s in found.spans if s.trace_id.hex() == TRACE_ID]
    server = [s for s in ours if s.kind == Span.SPAN_KIND_SERVER]
    client = [s for s in ours if s.kind == Span.SPAN_KIND_CLIENT]
    assert [s.name for s in server] == ["sagewire.v1.InferenceService/Invoke"]
    assert [s.name for s in client] == ["SageMaker Runtime.InvokeEndpoint"]
    assert client[0].parent_span_id == server[0].span_id
    called = attributes(client[0].attributes)
    assert called["rpc.system"] == "aws-api"
    assert called["rpc.method"] == "InvokeEndpoint"
    assert called["aws.sagemaker.endpoint_name"] == "echo"
    assert called["http.response.status_code"] == 200
    assert called["retry_attempts"] == 0
    assert SECRET not in str(found.spans)
    _check_s3_and_bidi_spans(found)

    # rpc.server.call.duration in seconds, per method and status code.
    points = _points(found)
    # Cumulative temporality: the last export holds the totals.
    invoke_ok = [
        p for p in points if p["rpc.method"] == "Invoke" and p["rpc.grpc.status_code"] == 0
    ]
    assert invoke_ok
    assert invoke_ok[-1]["count"] == 1 + len(EXEMPLAR_TRACES[0]) + 1
    assert invoke_ok[-1]["sagewire.model"] == "echo"
    assert any(p["rpc.grpc.status_code"] == 5 for p in points)  # NOT_FOUND
    _check_exemplars(found, points)

    # JSON logs: one object per line, the access record with the caller's trace id.
    records = [json.loads(line) for line in log if line.startswith("{")]
    assert records
    for record in records:
        assert {"time", "level", "logger", "message", "trace_id", "span_id"} <= record.keys()
    access = [r for r in records if r["logger"] == "sagewire.access"]
    invoke = [r for r in access if r["access"]["method"] == "sagewire.v1.InferenceService/Invoke"]
    assert invoke[0]["trace_id"] == TRACE_ID
    assert invoke[0]["access"] | {"duration_ms": 0} == {
        "method": "sagewire.v1.InferenceService/Invoke",
        "model": "echo",
        "status": "OK",
        "reason": "",
        "duration_ms": 0,
        "bytes_in": invoke[0]["access"]["bytes_in"],
        "bytes_out": invoke[0]["access"]["bytes_out"],
    }
    assert invoke[0]["access"]["bytes_in"] > len(SECRET)
    failed = [r for r in invoke if r["access"]["status"] == "NOT_FOUND"]
    assert failed[0]["access"]["reason"] == "UNKNOWN_MODEL"
    assert failed[0]["access"]["model"] == ""
    rest = [r for r in access if r["access"].get("http_status") == 200]
    assert [r["access"]["method"] for r in rest] == ["sagewire.v1.InferenceService/Invoke"] * 2
    # Their records name their SERVER spans, though a record ends outside its span (it also
    # covers the security layer and routing).
    rest_spans = {
        s.span_id.hex()
        for s in found.spans
        if s.trace_id.hex() == REST_TRACE and s.kind == Span.SPAN_KIND_SERVER
    }
    assert len(rest_spans) == 2
    assert {(r["trace_id"], r["span_id"]) for r in rest} == {(REST_TRACE, s) for s in rest_spans}
    assert SECRET not in "".join(log)
