"""Several sagewire processes sharing PROMETHEUS_MULTIPROC_DIR report one coherent set: each
process's /metrics serves the sum over all of them (prometheus-client's multiprocess mode)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from processes import EMULATOR_TABLES, invoke, sagewire_process
from scrape import scrape

from sagewire.emulator.server import RunningEmulator

pytestmark = pytest.mark.e2e

CONFIG = (
    """
[server]
listen = "127.0.0.1:0"
"""
    + EMULATOR_TABLES
    + """
[routes.echo]
endpoint = "echo"
max_concurrency = 8
"""
)


async def test_two_processes_one_set_of_metrics(emulator: RunningEmulator, tmp_path: Path) -> None:
    config = tmp_path / "sagewire.toml"
    config.write_text(CONFIG.format(url=emulator.url))
    shared = tmp_path / "prometheus"
    shared.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(shared)}
    args = ("serve", "--config", str(config))
    with sagewire_process(*args, env=env) as one, sagewire_process(*args, env=env) as two:
        await invoke(one.target, "echo")
        await invoke(two.target, "echo")
        await invoke(two.target, "echo")
        seen = [await scrape(one.metrics_url), await scrape(two.metrics_url)]
        assert await asyncio.to_thread(one.stop) == 0
        assert await asyncio.to_thread(two.stop) == 0
    unary = {"grpc_type": "unary", "grpc_service": "sagewire.v1.InferenceService"}
    for found in seen:  # either process answers for both
        assert (
            found.value("grpc_server_handled_total", **unary, grpc_method="Invoke", grpc_code="OK")
            == 3
        )
        upstream = {"model": "echo", "operation": "InvokeEndpoint", "outcome": "OK"}
        assert found.value("sagewire_upstream_requests_total", **upstream) == 3
        assert found.value("sagewire_route_max_concurrency", model="echo") == 16  # 2 × 8
        assert found.value("sagewire_route_in_flight", model="echo") == 0
    assert list(shared.glob("*.db"))  # the values lived in the shared directory
