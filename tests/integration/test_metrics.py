"""Prometheus metrics, scraped over HTTP from a running sagewire after real calls.

Each test starts its own sagewire (its own registry), so every count is exact.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from scrape import Scrape, scrape, scrape_until

from sagewire.emulator.faults import Fault
from sagewire.emulator.server import RunningEmulator
from sagewire.v1 import invoke_pb2, model_service_pb2
from support import BOTH_AWS_CLIENTS, Sagewire, start_sagewire

pytestmark = BOTH_AWS_CLIENTS

INFERENCE = "sagewire.v1.InferenceService"
HEALTH = "grpc.health.v1.Health"
REFLECT = ("bidi_stream", "ServerReflectionInfo", "grpc.reflection.v1alpha.ServerReflection")


@asynccontextmanager
async def metered(emulator: RunningEmulator, **kwargs: Any) -> AsyncIterator[tuple[Sagewire, str]]:
    async with start_sagewire(
        emulator, telemetry={"metrics_listen": "127.0.0.1:0"}, **kwargs
    ) as sw:
        yield sw, f"http://127.0.0.1:{sw.server.metrics_port}/metrics"


def rpc(kind: str, method: str, service: str = INFERENCE) -> dict[str, str]:
    return {"grpc_type": kind, "grpc_service": service, "grpc_method": method}


async def status_of(call: Any) -> str:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code().name
    return "OK"


def models_in(found: Scrape) -> set[str]:
    """Every value the `model` label takes in the scrape, but for the configured limits."""
    return {
        dict(labels)["model"]
        for (name, labels) in found.samples
        if "model" in dict(labels)
        and name not in ("sagewire_route_max_concurrency", "sagewire_route_concurrency_limit")
    }


async def test_a_unary_call_is_counted_in_every_series(emulator: RunningEmulator) -> None:
    async with metered(emulator) as (sw, url):
        await sw.inference.Invoke(invoke_pb2.InvokeRequest(model="echo", body=b'{"x":1}'))
        found = await scrape(url)
    labels = rpc("unary", "Invoke")
    assert found.value("grpc_server_started_total", **labels) == 1
    assert found.value("grpc_server_handled_total", **labels, grpc_code="OK") == 1
    assert found.value("grpc_server_handling_seconds_count", **labels) == 1
    assert found.value("grpc_server_msg_received_total", **labels) == 1
    assert found.value("grpc_server_msg_sent_total", **labels) == 1
    upstream = {"model": "echo", "operation": "InvokeEndpoint"}
    assert found.value("sagewire_upstream_requests_total", **upstream, outcome="OK") == 1
    assert found.value("sagewire_upstream_request_duration_seconds_count", **upstream) == 1
    assert found.value("sagewire_route_in_flight", model="echo") == 0
    assert found.value("sagewire_route_max_concurrency", model="single-file") == 1
    assert found.value("sagewire_route_concurrency_limit", model="single-file") == 1
    # botocore's standard retry quota starts at 500 and nothing was retried.
    assert found.value("sagewire_aws_retry_quota_available", service="sagemaker-runtime") == 500
    # Series of calls only name the route called; the limits name every configured route.
    assert models_in(found) == {"echo"}


@pytest.mark.parametrize(
    ("model", "body", "code", "label"),
    [
        ("nope-caller-string", b"{}", "NOT_FOUND", ""),  # no route: no caller string as label
        ("echo-strict", b"", "OK", "echo-strict"),
        ("async-only", b"{}", "FAILED_PRECONDITION", "async-only"),
    ],
)
async def test_status_codes_and_model_labels(
    emulator: RunningEmulator, model: str, body: bytes, code: str, label: str
) -> None:
    async with metered(emulator) as (sw, url):
        got = await status_of(sw.inference.Invoke(invoke_pb2.InvokeRequest(model=model, body=body)))
        found = await scrape(url)
    assert got == code
    handled = found.labelled("grpc_server_handled_total")
    assert handled == [{**rpc("unary", "Invoke"), "grpc_code": code}]
    assert "nope-caller-string" not in found.text
    assert models_in(found) <= {label}


async def test_upstream_failures_carry_their_reason(emulator: RunningEmulator) -> None:
    emulator.set_fault("faulty", Fault(error="model_error", original_status=503))
    async with metered(emulator) as (sw, url):
        for model in ("faulty", "missing"):
            with pytest.raises(grpc.aio.AioRpcError):
                await sw.inference.Invoke(invoke_pb2.InvokeRequest(model=model, body=b"{}"))
        found = await scrape(url)
    requests = "sagewire_upstream_requests_total"
    assert found.value(requests, model="faulty", operation="InvokeEndpoint", outcome="MODEL_ERROR")
    assert found.value(
        requests, model="missing", operation="InvokeEndpoint", outcome="ENDPOINT_NOT_FOUND"
    )
    codes = {s["grpc_code"] for s in found.labelled("grpc_server_handled_total")}
    assert codes == {"UNAVAILABLE", "NOT_FOUND"}


async def test_retries_and_the_retry_quota(emulator: RunningEmulator) -> None:
    # Three attempts against a throttling endpoint: two retries, each costing botocore's
    # standard mode 5 units of its 500-unit quota.
    emulator.set_fault("faulty", Fault(error="throttling"))
    async with metered(emulator, aws={"max_attempts": 3}) as (sw, url):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await sw.inference.Invoke(invoke_pb2.InvokeRequest(model="faulty", body=b"{}"))
        found = await scrape(url)
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    upstream = {"model": "faulty", "operation": "InvokeEndpoint"}
    assert found.value("sagewire_upstream_requests_total", **upstream, outcome="THROTTLED") == 1
    assert found.value("sagewire_upstream_retries_total", **upstream) == 2
    assert found.value("sagewire_aws_retry_quota_available", service="sagemaker-runtime") == 490


async def test_concurrency_rejections_and_in_flight(emulator: RunningEmulator) -> None:
    # The first call holds the route's one slot for 5 s (1 s by default): long enough that the
    # scrape and the second call land inside it on a loaded machine too.
    emulator.set_fault("slow-echo", Fault(latency_ms=5000))
    async with metered(emulator) as (sw, url):
        first = asyncio.ensure_future(
            sw.inference.Invoke(invoke_pb2.InvokeRequest(model="single-file", body=b"{}"))
        )
        busy = await scrape_until(
            url, lambda s: s.value("sagewire_route_in_flight", model="single-file") == 1
        )
        assert busy.value("sagewire_route_in_flight", model="single-file") == 1
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await sw.inference.Invoke(invoke_pb2.InvokeRequest(model="single-file", body=b"{}"))
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        await first
        found = await scrape(url)
    assert (
        found.value(
            "sagewire_route_rejections_total", model="single-file", reason="ROUTE_CONCURRENCY_LIMIT"
        )
        == 1
    )
    assert found.value("sagewire_route_in_flight", model="single-file") == 0
    handled = "grpc_server_handled_total"
    assert found.value(handled, **rpc("unary", "Invoke"), grpc_code="UNAVAILABLE") == 1
    assert found.value(handled, **rpc("unary", "Invoke"), grpc_code="OK") == 1


async def test_deadline_exceeded(emulator: RunningEmulator) -> None:
    async with metered(emulator) as (sw, url):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await sw.inference.Invoke(invoke_pb2.InvokeRequest(model="slow-echo-short", body=b"{}"))
        assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        found = await scrape(url)
    handled = "grpc_server_handled_total"
    assert found.value(handled, **rpc("unary", "Invoke"), grpc_code="DEADLINE_EXCEEDED") == 1
    # The upstream call was cut off by the route's timeout: cancelled, not failed upstream.
    assert (
        found.value(
            "sagewire_upstream_requests_total",
            model="slow-echo-short",
            operation="InvokeEndpoint",
            outcome="CANCELLED",
        )
        == 1
    )


@pytest.mark.parametrize("kind", ["unary", "server_stream"])
async def test_the_callers_own_deadline_is_recorded_as_deadline_exceeded(
    emulator: RunningEmulator, kind: str
) -> None:
    # The caller's 0.5 s deadline, not the route's, ends every call; each is recorded as the
    # client saw it (grpc's core ends the call when its timer fires, while the server's reading
    # of the time left can still be a hair above zero: that was recorded as CANCELLED).
    emulator.set_fault("slow-echo", Fault(latency_ms=2000))
    emulator.set_fault("tokens", Fault(latency_ms=2000))
    method = "Invoke" if kind == "unary" else "InvokeStream"
    labels = rpc(kind, method)
    handled = "grpc_server_handled_total"
    async with metered(emulator) as (sw, url):

        async def call() -> None:
            if kind == "unary":
                request = invoke_pb2.InvokeRequest(model="slow-echo", body=b"{}")
                await sw.inference.Invoke(request, timeout=0.5)
            else:
                streamed = invoke_pb2.InvokeStreamRequest(model="tokens", body=b"{}")
                [m async for m in sw.inference.InvokeStream(streamed, timeout=0.5)]

        # Connected first, so no deadline is spent on the connection: each call reaches the
        # server well within it, also on a loaded machine.
        await asyncio.wait_for(sw.channel.channel_ready(), timeout=10)
        for _ in range(6):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call()
            assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED

        def ended(s: Scrape) -> bool:
            codes = ("DEADLINE_EXCEEDED", "CANCELLED")
            return sum(s.value(handled, **labels, grpc_code=c) or 0 for c in codes) == 6

        found = await scrape_until(url, ended)
    assert found.value(handled, **labels, grpc_code="DEADLINE_EXCEEDED") == 6
    assert found.value(handled, **labels, grpc_code="CANCELLED") is None


async def test_a_stream_counts_its_parts(emulator: RunningEmulator) -> None:
    async with metered(emulator) as (sw, url):
        call = sw.inference.InvokeStream(
            invoke_pb2.InvokeStreamRequest(model="tokens", body=b'{"text": "one two three"}')
        )
        messages = [message async for message in call]
        found = await scrape(url)
    assert len(messages) == 4  # three words and {"done": true}
    labels = rpc("server_stream", "InvokeStream")
    assert found.value("grpc_server_handled_total", **labels, grpc_code="OK") == 1
    assert found.value("grpc_server_msg_received_total", **labels) == 1
    assert found.value("grpc_server_msg_sent_total", **labels) == 4
    assert found.value("sagewire_stream_parts_relayed_total", model="tokens") == 4
    assert found.value("sagewire_stream_time_to_first_part_seconds_count", model="tokens") == 1
    upstream = {"model": "tokens", "operation": "InvokeEndpointWithResponseStream"}
    assert found.value("sagewire_upstream_requests_total", **upstream, outcome="OK") == 1


async def test_a_cancelled_stream_is_counted_as_cancelled(emulator: RunningEmulator) -> None:
    async with metered(emulator) as (sw, url):
        call = sw.inference.InvokeStream(
            invoke_pb2.InvokeStreamRequest(
                model="tokens", body=b'{"text": "a b c d e f g h", "delay_ms": 500}'
            )
        )
        await call.read()
        call.cancel()
        labels = {**rpc("server_stream", "InvokeStream"), "grpc_code": "CANCELLED"}
        found = await scrape_until(url, lambda s: s.value("grpc_server_handled_total", **labels))
    assert found.value("grpc_server_handled_total", **labels) == 1
    assert found.value("sagewire_route_in_flight", model="tokens") == 0
    assert found.value("grpc_server_msg_sent_total", **rpc("server_stream", "InvokeStream")) == 1


async def test_model_service_and_passthrough_labels(emulator: RunningEmulator) -> None:
    async with metered(emulator, server={"allow_endpoint_passthrough": True}) as (sw, url):
        await sw.models.ListModels(model_service_pb2.ListModelsRequest())
        await sw.inference.Invoke(invoke_pb2.InvokeRequest(model="endpoint/echo", body=b"{}"))
        found = await scrape(url)
    listed = rpc("unary", "ListModels", "sagewire.v1.ModelService")
    assert found.value("grpc_server_handled_total", **listed, grpc_code="OK") == 1
    # Pass-through endpoint names come from callers: they share one label.
    assert found.value(
        "sagewire_upstream_requests_total",
        model="(passthrough)",
        operation="InvokeEndpoint",
        outcome="OK",
    )
    assert "endpoint/echo" not in found.text


async def test_rest_requests_have_http_series_and_the_same_route_series(
    emulator: RunningEmulator,
) -> None:
    async with metered(emulator) as (sw, url):
        base = f"http://127.0.0.1:{sw.server.rest_port}"
        async with aiohttp.ClientSession() as http:
            ok = await http.post(f"{base}/v1/models/echo:invoke", json={"json": {"a": 1}})
            missing = await http.post(f"{base}/v1/models/nope-caller:invoke", json={"json": {}})
            statuses = (ok.status, missing.status)
        found = await scrape(url)
    assert statuses == (200, 404)
    duration = "http_server_request_duration_seconds_count"
    route = {"http_request_method": "POST", "http_route": "/v1/models/{model}:invoke"}
    assert found.value(duration, **route, http_response_status_code="200") == 1
    assert found.value(duration, **route, http_response_status_code="404") == 1
    # The route series are transport-neutral; the gRPC ones count gRPC calls only.
    upstream = {"model": "echo", "operation": "InvokeEndpoint", "outcome": "OK"}
    assert found.value("sagewire_upstream_requests_total", **upstream) == 1
    assert found.labelled("grpc_server_started_total") == []
    assert "nope-caller" not in found.text


def _raw(data: bytes) -> bytes:
    return data


async def test_health_reflection_and_undecodable_requests_are_counted(
    emulator: RunningEmulator,
) -> None:
    """Every RPC the server handles counts in grpc_server_*, as in go-grpc-prometheus: probes,
    reflection and requests refused before a servicer ran included."""
    async with metered(emulator) as (sw, url):
        health = health_pb2_grpc.HealthStub(sw.channel)
        await health.Check(health_pb2.HealthCheckRequest(service=""))
        unknown = await status_of(health.Check(health_pb2.HealthCheckRequest(service="nope")))
        reflect = reflection_pb2_grpc.ServerReflectionStub(sw.channel)
        ask = reflection_pb2.ServerReflectionRequest(list_services="")
        answers = [a async for a in reflect.ServerReflectionInfo(iter([ask, ask]))]
        junk = await status_of(
            sw.channel.unary_unary(
                f"/{INFERENCE}/Invoke", request_serializer=_raw, response_deserializer=_raw
            )(b"\xff\xff\xff")
        )
        junk_health = await status_of(
            sw.channel.unary_unary(
                "/grpc.health.v1.Health/Check", request_serializer=_raw, response_deserializer=_raw
            )(b"\xff\xff\xff")
        )
        found = await scrape_until(
            url, lambda f: f.value("grpc_server_started_total", **rpc(*REFLECT)) == 1
        )
    assert (unknown, len(answers), junk, junk_health) == (
        "NOT_FOUND",
        2,
        "INVALID_ARGUMENT",
        "INVALID_ARGUMENT",
    )
    check = rpc("unary", "Check", HEALTH)
    assert found.value("grpc_server_started_total", **check) == 3
    assert found.value("grpc_server_handled_total", **check, grpc_code="OK") == 1
    assert found.value("grpc_server_handled_total", **check, grpc_code="NOT_FOUND") == 1
    assert found.value("grpc_server_handled_total", **check, grpc_code="INVALID_ARGUMENT") == 1
    assert found.value("grpc_server_handling_seconds_count", **check) == 3
    assert found.value("grpc_server_msg_sent_total", **check) == 1
    reflection = rpc(*REFLECT)
    assert found.value("grpc_server_handled_total", **reflection, grpc_code="OK") == 1
    assert found.value("grpc_server_msg_received_total", **reflection) == 2
    assert found.value("grpc_server_msg_sent_total", **reflection) == 2
    invoke = rpc("unary", "Invoke")
    assert found.value("grpc_server_started_total", **invoke) == 1
    assert found.value("grpc_server_handled_total", **invoke, grpc_code="INVALID_ARGUMENT") == 1
    assert found.value("grpc_server_msg_sent_total", **invoke) == 0
