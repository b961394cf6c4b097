"""Several sagewire processes sharing PROMETHEUS_MULTIPROC_DIR report one coherent set: each
process's /metrics serves the sum over all of them (prometheus-client's multiprocess mode)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from processes import EMULATOR_TABLES, invoke, sagewire_process
from scrape import scrape, scrape_until

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


# What an earlier run leaves behind: a dead process's counter file, 1000 Invoke calls OK.
EARLIER_RUN = """
from prometheus_client import Counter
labels = ["grpc_type", "grpc_service", "grpc_method", "grpc_code"]
handled = Counter("grpc_server_handled", "", labels)
handled.labels("unary", "sagewire.v1.InferenceService", "Invoke", "OK").inc(1000)
"""


async def test_workers_empty_the_operators_directory_of_an_earlier_run(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    config = tmp_path / "sagewire.toml"
    config.write_text(CONFIG.format(url=emulator.url))
    directory = tmp_path / "prometheus"
    directory.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(directory)}
    earlier = await asyncio.create_subprocess_exec(
        sys.executable, "-c", EARLIER_RUN, env={**os.environ, **env}
    )
    assert await earlier.wait() == 0
    [stale] = directory.glob("*.db")
    (directory / "README").write_text("not prometheus-client's: kept")
    labels = {
        "grpc_type": "unary",
        "grpc_service": "sagewire.v1.InferenceService",
        "grpc_method": "Invoke",
        "grpc_code": "OK",
    }
    args = ("serve", "--config", str(config), "--workers", "2")
    with sagewire_process(*args, env=env) as process:
        for _ in range(3):
            await invoke(process.target, "echo")
        found = await scrape_until(
            process.metrics_url, lambda s: s.value("grpc_server_handled_total", **labels) == 3
        )
        assert await asyncio.to_thread(process.stop) == 0
    # The earlier run's 1000 are not in this run's sum; its file is gone, other files are not.
    assert found.value("grpc_server_handled_total", **labels) == 3
    assert not stale.exists()
    assert (directory / "README").exists()
    assert any(
        f"PROMETHEUS_MULTIPROC_DIR {directory}: removed 1 files" in line for line in process.log
    )
