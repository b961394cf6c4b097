"""SIGTERM to `sagewire serve` while REST calls are in flight (the REST bridge's drain): the
calls finish, /readyz answers 503 during `server.drain_delay_s`, new connections are refused
after, and the process exits 0. Real process, real aiohttp client, real emulator."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from processes import EMULATOR_TABLES, sagewire_process
from scrape import scrape_until

from sagewire.emulator.faults import Fault
from sagewire.emulator.server import RunningEmulator

pytestmark = pytest.mark.e2e

CONFIG = (
    """
[server]
listen = "127.0.0.1:0"
drain_delay_s = 3
shutdown_grace_s = 30

[rest]
listen = "127.0.0.1:0"
"""
    + EMULATOR_TABLES
    + """
[routes.slow]
endpoint = "faulty"
timeout_s = 60

[routes.stream]
endpoint = "faulty-stream"
mode = "stream"
framing = "lines"
timeout_s = 60
"""
)
TOKENS = "a b c d e f"


async def _readyz(url: str) -> int:
    # A fresh connection each time: what a load balancer's probe does.
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http,
        http.get(url + "/readyz") as response,
    ):
        return response.status


async def _unary(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.post(url + "/v1/models/slow:invoke", json={"json": {"n": 1}}) as response:
        return response.status, await response.json()


async def test_sigterm_lets_rest_calls_finish(emulator: RunningEmulator, tmp_path: Path) -> None:
    emulator.set_fault("faulty", Fault(latency_ms=6000))
    emulator.set_fault("faulty-stream", Fault(part_delay_ms=800))
    config = tmp_path / "sagewire.toml"
    config.write_text(CONFIG.format(url=emulator.url))
    with sagewire_process("serve", "--config", str(config)) as process:
        url = process.rest_url
        assert await _readyz(url) == 200
        async with aiohttp.ClientSession() as http:
            unary = asyncio.create_task(_unary(http, url))
            stream = await http.post(
                url + "/v1/models/stream:invokeStream", json={"json": {"text": TOKENS}}
            )
            assert stream.status == 200
            first = await stream.content.readline()  # the stream is under way
            await scrape_until(
                process.metrics_url, lambda s: s.value("sagewire_route_in_flight", model="slow")
            )
            process.popen.send_signal(signal.SIGTERM)
            statuses = []
            for _ in range(200):  # the drain delay is 3 s; a flip takes milliseconds
                statuses.append(await _readyz(url))
                if statuses[-1] != 200:
                    break
                await asyncio.sleep(0.05)
            assert statuses[-1] == 503
            # Once the drain delay is over the listener closes: new connections are refused
            # while the calls already accepted carry on.
            with pytest.raises(aiohttp.ClientConnectorError):  # noqa: PT012 - polls until then
                for _ in range(400):
                    await _readyz(url)
                    await asyncio.sleep(0.05)
            lines = [json.loads(first)] + [
                json.loads(line) async for line in stream.content if line.strip()
            ]
            stream.release()
            status, answer = await unary
        assert status == 200
        assert answer["json"] == {"n": 1}
        assert [m["json"].get("token") for m in lines] == [*TOKENS.split(), None]
        assert lines[-1]["json"]["done"] is True
        assert await asyncio.to_thread(process.popen.wait, 60) == 0
    port = int(url.rsplit(":", 1)[1])
    with pytest.raises(ConnectionRefusedError), socket.socket() as late:
        late.connect(("127.0.0.1", port))
