"""The bridge's own routes (raw passthrough, UploadAsync, Converse over WebSocket) are observed
like transcoded ones: an `http_server_request_duration_seconds` series per route template, an
access record naming the RPC, status and reason. Scraped over HTTP from a running sagewire."""

from __future__ import annotations

import logging

import aiohttp
import pytest
from scrape import scrape

from sagewire.emulator.server import RunningEmulator
from support import start_sagewire

DURATION = "http_server_request_duration_seconds_count"


async def test_passthrough_upload_and_websocket_routes_are_recorded(
    emulator: RunningEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sagewire.access")
    async with start_sagewire(emulator, telemetry={"metrics_listen": "127.0.0.1:0"}) as sw:
        base = sw.rest_url
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            async with http.post(f"{base}/v1/models/echo/invocations", data=b"{}") as ok:
                assert ok.status == 200
            async with http.post(f"{base}/v1/models/nope/invocations", data=b"{}") as missing:
                assert missing.status == 404
            stream = f"{base}/v1/models/tokens/invocations-response-stream"
            async with http.post(stream, data=b'{"text": "a b"}') as streamed:
                assert streamed.status == 200
                await streamed.read()
            async with http.post(f"{base}/v1/models/echo:uploadAsync", data=b"{}") as upload:
                assert upload.status == 400  # echo is not an async route
            async with http.ws_connect(f"{base}/v1/models/nope:converse") as ws:
                await ws.send_json({"open": {}})
                await ws.receive()  # the error frame
        found = await scrape(f"http://127.0.0.1:{sw.server.metrics_port}/metrics")

    def count(route: str, status: str, method: str = "POST") -> float | None:
        labels = {"http_request_method": method, "http_route": route}
        return found.value(DURATION, **labels, http_response_status_code=status)

    assert count("/v1/models/{model}/invocations", "200") == 1
    assert count("/v1/models/{model}/invocations", "404") == 1
    assert count("/v1/models/{model}/invocations-response-stream", "200") == 1
    assert count("/v1/models/{model}:uploadAsync", "400") == 1
    assert count("/v1/models/{model}:converse", "101", "GET") == 1
    assert "nope" not in {v for _, labels in found.samples for k, v in labels if k == "http_route"}
    lines = [r.getMessage() for r in caplog.records if r.name == "sagewire.access"]
    assert any("InferenceService/Invoke model=- -> NOT_FOUND (UNKNOWN_MODEL)" in x for x in lines)
    assert any(
        "InferenceService/UploadAsync model=echo -> FAILED_PRECONDITION (WRONG_MODE)" in x
        for x in lines
    )
    assert any("InferenceService/Converse" in x and "(UNKNOWN_MODEL)" in x for x in lines)
