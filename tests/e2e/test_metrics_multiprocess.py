"""Several sagewire processes sharing PROMETHEUS_MULTIPROC_DIR report one coherent set: each
process's /metrics serves the sum over all of them (prometheus-client's multiprocess mode)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from processes import sagewire_process
from scrape import scrape

from sagewire.emulator.server import RunningEmulator
from sagewire.v1 import inference_service_pb2_grpc, invoke_pb2

pytestmark = pytest.mark.e2e

CONFIG = """
[server]
listen = "127.0.0.1:0"

[aws]
runtime_endpoint_url = "{url}"
max_attempts = 1

[telemetry]
metrics_listen = "127.0.0.1:0"

[routes.echo]
endpoint = "echo"
max_concurrency = 8
"""


async def _invoke(target: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = inference_service_pb2_grpc.InferenceServiceStub(channel)
        await stub.Invoke(invoke_pb2.InvokeRequest(model="echo", body=b"{}"), timeout=30)


async def test_two_processes_one_set_of_metrics(emulator: RunningEmulator, tmp_path: Path) -> None:
    config = tmp_path / "sagewire.toml"
    config.write_text(CONFIG.format(url=emulator.url))
    shared = tmp_path / "prometheus"
    shared.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(shared)}
    args = ("serve", "--config", str(config))
    with sagewire_process(*args, env=env) as one, sagewire_process(*args, env=env) as two:
        await _invoke(one.target)
        await _invoke(two.target)
        await _invoke(two.target)
        seen = [await scrape(one.metrics_url), await scrape(two.metrics_url)]
        assert await asyncio.to_thread(one.stop) == 0
        assert await asyncio.to_thread(two.stop) == 0
    invoke = {"grpc_type": "unary", "grpc_service": "sagewire.v1.InferenceService"}
    for found in seen:  # either process answers for both
        assert (
            found.value("grpc_server_handled_total", **invoke, grpc_method="Invoke", grpc_code="OK")
            == 3
        )
        upstream = {"model": "echo", "operation": "InvokeEndpoint", "outcome": "OK"}
        assert found.value("sagewire_upstream_requests_total", **upstream) == 3
        assert found.value("sagewire_route_max_concurrency", model="echo") == 16  # 2 × 8
        assert found.value("sagewire_route_in_flight", model="echo") == 0
    assert list(shared.glob("*.db"))  # the values lived in the shared directory
