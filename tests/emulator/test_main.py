"""``python -m sagewire.emulator``: serves a config file until SIGTERM; bad configs exit 2."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

import aiohttp


async def test_serves_config_until_sigterm(tmp_path: Path) -> None:
    config = tmp_path / "emu.toml"
    config.write_text('[endpoints.mine]\nmodel = "echo"\n', encoding="utf-8")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sagewire.emulator", "--config", str(config), "--port", "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 15)).decode()
        match = re.search(r"(http://127\.0\.0\.1:\d+) endpoints: mine", line)
        assert match, line
        url = match.group(1)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/ping") as ping:
                assert ping.status == 200
            async with http.post(f"{url}/endpoints/mine/invocations", data=b"hi") as echo:
                assert (echo.status, await echo.read()) == (200, b"hi")
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_invalid_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "emu.toml"
    config.write_text('[endpoints.mine]\nmodel = "echo"\nlatency = 5\n', encoding="utf-8")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sagewire.emulator", "--config", str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(process.communicate(), 15)
    assert process.returncode == 2
    assert "endpoints.mine.latency" in stderr.decode()
