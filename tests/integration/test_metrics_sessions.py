"""Metrics of the long-lived calls: Converse sessions and turns, async jobs and their S3
staging, and the REST bridge's own routes. Scraped over HTTP after real calls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from async_support import async_settings
from google.protobuf import json_format, struct_pb2
from scrape import scrape, scrape_until

from sagewire.emulator.server import RunningEmulator
from sagewire.v1 import async_jobs_pb2, converse_pb2
from support import EOF, Sagewire, start_sagewire

METRICS = {"metrics_listen": "127.0.0.1:0"}


@asynccontextmanager
async def metered(runtime: Any, **kwargs: Any) -> AsyncIterator[tuple[Sagewire, str]]:
    async with start_sagewire(runtime, telemetry=METRICS, **kwargs) as sw:
        yield sw, f"http://127.0.0.1:{sw.server.metrics_port}/metrics"


def _turn(turn_id: str, doc: Any = None) -> converse_pb2.ConverseRequest:
    message = converse_pb2.ConverseTurn(turn_id=turn_id)
    if doc is not None:
        message.json.CopyFrom(json_format.ParseDict(doc, struct_pb2.Value()))
    return converse_pb2.ConverseRequest(turn=message)


async def test_converse_sessions_and_turns(emulator: RunningEmulator) -> None:
    async with metered(emulator) as (sw, url):
        call = sw.inference.Converse(timeout=30)  # type: ignore[call-arg]
        await call.write(
            converse_pb2.ConverseRequest(open=converse_pb2.ConverseOpen(model="tokens"))
        )
        received = [await call.read()]
        during = await scrape(url)
        await call.write(_turn("t1", {"text": "one two"}))
        await call.write(_turn("t2"))  # no payload: refused in band, the session goes on
        await call.write(converse_pb2.ConverseRequest(close=converse_pb2.ConverseClose()))
        while (message := await call.read()) is not EOF:
            received.append(message)
        found = await scrape_until(
            url, lambda s: s.value("sagewire_converse_sessions_open", model="tokens") == 0
        )
    assert during.value("sagewire_converse_sessions_open", model="tokens") == 1
    assert found.value("sagewire_converse_sessions_open", model="tokens") == 0
    turns = "sagewire_converse_turns_total"
    assert found.value(turns, model="tokens", outcome="OK") == 1
    assert found.value(turns, model="tokens", outcome="INVALID_ARGUMENT") == 1
    rpc = {
        "grpc_type": "bidi_stream",
        "grpc_service": "sagewire.v1.InferenceService",
        "grpc_method": "Converse",
    }
    assert found.value("grpc_server_handled_total", **rpc, grpc_code="OK") == 1
    assert found.value("grpc_server_msg_received_total", **rpc) == 4
    assert found.value("grpc_server_msg_sent_total", **rpc) == len(received)
    # The turn's stream: two words and {"done": true}.
    assert found.value("sagewire_stream_parts_relayed_total", model="tokens") == 3


async def test_a_bidirectional_stream_is_one_upstream_call(emulator: RunningEmulator) -> None:
    async with metered(emulator) as (sw, url):
        call = sw.inference.Converse(timeout=30)  # type: ignore[call-arg]
        await call.write(
            converse_pb2.ConverseRequest(open=converse_pb2.ConverseOpen(model="bidi-echo"))
        )
        opened = await call.read()
        await call.write(
            converse_pb2.ConverseRequest(turn=converse_pb2.ConverseTurn(turn_id="t1", text="hello"))
        )
        await call.write(converse_pb2.ConverseRequest(close=converse_pb2.ConverseClose()))
        while await call.read() is not EOF:
            pass
        found = await scrape_until(
            url, lambda s: s.value("sagewire_converse_sessions_open", model="bidi-echo") == 0
        )
    assert isinstance(opened, converse_pb2.ConverseResponse)
    assert opened.WhichOneof("kind") == "opened"
    upstream = {"model": "bidi-echo", "operation": "InvokeEndpointWithBidirectionalStream"}
    assert found.value("sagewire_upstream_requests_total", **upstream, outcome="OK") == 1
    assert found.value("sagewire_upstream_request_duration_seconds_count", **upstream) == 1
    relayed = found.value("sagewire_stream_parts_relayed_total", model="bidi-echo")
    assert relayed is not None
    assert relayed >= 1


async def test_async_jobs_and_staging(async_emulator: RunningEmulator, s3_url: str) -> None:
    body = b'{"document": "hello"}'
    async with metered(async_emulator.url, **async_settings(s3_url)) as (sw, url):
        job = (
            await sw.inference.SubmitAsync(
                async_jobs_pb2.SubmitAsyncRequest(model="slow-echo", body=body)
            )
        ).job
        watch = sw.inference.WatchAsync(async_jobs_pb2.WatchAsyncRequest(job_id=job.job_id))
        states = [update.state async for update in watch]
        result = await sw.inference.GetAsyncResult(
            async_jobs_pb2.GetAsyncResultRequest(job_id=job.job_id)
        )
        found = await scrape(url)
    assert states[-1] == result.state == async_jobs_pb2.ASYNC_STATE_COMPLETED
    assert found.value("sagewire_async_jobs_submitted_total", model="slow-echo") == 1
    assert found.value("sagewire_s3_uploaded_bytes_total", model="slow-echo") == len(body)
    # Reported twice (WatchAsync's last update, then GetAsyncResult): counted twice.
    finished = "sagewire_async_jobs_finished_total"
    assert found.value(finished, model="slow-echo", state="completed") == 2
    upstream = "sagewire_upstream_requests_total"
    assert found.value(upstream, model="slow-echo", operation="PutObject", outcome="OK") == 1
    assert (
        found.value(upstream, model="slow-echo", operation="InvokeEndpointAsync", outcome="OK") == 1
    )
    assert found.value("sagewire_aws_retry_quota_available", service="s3") == 500


async def test_rest_passthrough_routes_are_observed(emulator: RunningEmulator) -> None:
    async with metered(emulator) as (sw, url):
        base = f"http://127.0.0.1:{sw.server.rest_port}/v1/models"
        async with aiohttp.ClientSession() as http:
            ok = await http.post(f"{base}/echo/invocations", data=b"{}")
            missing = await http.post(f"{base}/nope-caller/invocations", data=b"{}")
            statuses = (ok.status, missing.status)
        found = await scrape(url)
    assert statuses == (200, 404)
    route = {"http_request_method": "POST", "http_route": "/v1/models/{model}/invocations"}
    duration = "http_server_request_duration_seconds_count"
    assert found.value(duration, **route, http_response_status_code="200") == 1
    assert found.value(duration, **route, http_response_status_code="404") == 1
    upstream = {"model": "echo", "operation": "InvokeEndpoint", "outcome": "OK"}
    assert found.value("sagewire_upstream_requests_total", **upstream) == 1
    assert "nope-caller" not in found.text
