"""The WebSocket client of docs/rest.md, run as printed (only the port changes) against
`sagewire local`: a real aiohttp WebSocket client over a socket, as a user would run it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
from processes import REPO, Process, sagewire_process

pytestmark = pytest.mark.e2e

PRINTED_ADDRESS = "127.0.0.1:8080"
_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


@pytest.fixture(scope="module")
def local() -> Iterator[Process]:
    with sagewire_process("local", "--config", "config/local.toml") as process:
        yield process


def test_the_websocket_example_runs_as_printed(local: Process) -> None:
    (script,) = [
        b for b in _BLOCK.findall((REPO / "docs" / "rest.md").read_text()) if "ws_connect" in b
    ]
    address = local.rest_url.removeprefix("http://")
    result = subprocess.run(
        [sys.executable, "-c", script.replace(PRINTED_ADDRESS, address)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    *frames, last = result.stdout.splitlines()
    assert last == "closed with 1000"
    messages = [json.loads(frame) for frame in frames]
    assert messages[0]["opened"]["model"] == "chat"
    assert messages[0]["opened"]["sessionId"]
    assert [m["turnEnd"]["turnId"] for m in messages if "turnEnd" in m] == ["t1", "t2"]
    turns = {m["chunk"]["json"].get("turn") for m in messages if "chunk" in m}
    assert {1, 2} <= turns
