"""Every RPC gets a SERVER span that continues the caller's W3C trace, without payloads."""

from __future__ import annotations

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from sagewire.emulator.server import RunningEmulator
from sagewire.v1 import invoke_pb2
from support import BOTH_AWS_CLIENTS, start_sagewire

pytestmark = BOTH_AWS_CLIENTS

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # process-wide, as opentelemetry-instrument would
    return exporter


async def test_rpc_spans_continue_the_callers_trace(
    emulator: RunningEmulator, spans: InMemorySpanExporter
) -> None:
    async with start_sagewire(emulator.url) as sw:
        secret = b'{"password":"hunter2"}'
        await sw.inference.Invoke(
            invoke_pb2.InvokeRequest(model="echo", body=secret),
            metadata=(("traceparent", PARENT),),
        )
        with pytest.raises(grpc.aio.AioRpcError):
            await sw.inference.Invoke(invoke_pb2.InvokeRequest(model="nope", body=b"x"))
    ok, failed = spans.get_finished_spans()[-2:]
    assert ok.name == "sagewire.v1.InferenceService/Invoke"
    assert ok.kind is trace.SpanKind.SERVER
    assert format(ok.context.trace_id, "032x") == TRACE_ID
    assert ok.attributes is not None
    assert ok.attributes["rpc.system"] == "grpc"
    assert "hunter2" not in str(ok.to_json())
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes is not None
    assert failed.attributes["sagewire.error.reason"] == "UNKNOWN_MODEL"
    assert failed.attributes["rpc.grpc.status_code"] == "NOT_FOUND"
