"""Converse over a WebSocket: a real aiohttp WebSocket client over a loopback socket →
sagewire's REST listener → the gRPC Converse body and core.converse → real aioboto3 → the
emulator. Frames are ConverseRequest / ConverseResponse in proto3 JSON."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from sagewire.emulator.server import RunningEmulator
from support import Sagewire, start_sagewire

OPEN = '{"requestType": "NEW_SESSION"}'
CLOSE = '{"requestType": "CLOSE"}'
CHAT = {"endpoint": "chat", "mode": "stream", "framing": "lines", "timeout_s": 60}
ROUTES: dict[str, dict[str, Any]] = {
    "chat": {**CHAT, "converse": {"sessions": True, "open_body": OPEN, "close_body": CLOSE}},
    "chat-idle": {**CHAT, "converse": {"idle_timeout_s": 0.3}},
    "tokens": {"endpoint": "tokens", "mode": "stream", "framing": "lines", "timeout_s": 60},
    "async-only": {
        "endpoint": "echo",
        "mode": "async",
        "async": {"output_prefix": "s3://sagewire-emulator/async-output/"},
    },
    "bidi-echo": {"endpoint": "bidi-echo", "mode": "bidi"},
}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def server(emulator: RunningEmulator) -> AsyncIterator[Sagewire]:
    async with start_sagewire(emulator, routes=ROUTES) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


def url(server: Sagewire, model: str) -> str:
    return f"{server.rest_url}/v1/models/{model}:converse"


async def frames_until_closed(ws: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]]:
    """Every text frame until the server closes (bounded by the receive timeout)."""
    received: list[dict[str, Any]] = []
    while True:
        message = await ws.receive(timeout=20)
        if message.type is not aiohttp.WSMsgType.TEXT:
            assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), message
            return received
        received.append(json.loads(message.data))


async def read_until(
    ws: aiohttp.ClientWebSocketResponse, done: Callable[[dict[str, Any]], bool]
) -> list[dict[str, Any]]:
    received: list[dict[str, Any]] = []
    while not received or not done(received[-1]):
        received.append(await ws.receive_json(timeout=20))
    return received


def _reason(status: dict[str, Any]) -> str:
    info = [d for d in status["details"] if d["@type"].endswith("google.rpc.ErrorInfo")]
    return str(info[0]["reason"])


async def test_a_chat_session_keeps_its_turns_on_one_sagemaker_session(
    http: aiohttp.ClientSession, server: Sagewire
) -> None:
    async with http.ws_connect(url(server, "chat")) as ws:
        await ws.send_json({"open": {}})  # the path names the model
        await ws.send_json({"turn": {"turnId": "t1", "json": {"text": "hello there"}}})
        await ws.send_json({"turn": {"turn_id": "t2", "json": {"text": "how are you"}}})
        await ws.send_json({"close": {}})
        frames = await frames_until_closed(ws)
        assert ws.close_code == 1000
    opened = frames[0]["opened"]
    assert opened["model"] == "chat"
    assert opened["sessionId"]
    chunks = [f["chunk"] for f in frames if "chunk" in f]
    turns = {c["json"]["turn"] for c in chunks if "turn" in c.get("json", {})}
    assert turns == {1, 2}  # the model saw both turns in one session
    ends = [f["turnEnd"]["turnId"] for f in frames if "turnEnd" in f]
    assert ends == ["t1", "t2"]


async def test_a_turn_error_is_in_band_and_the_session_goes_on(
    http: aiohttp.ClientSession, server: Sagewire
) -> None:
    async with http.ws_connect(url(server, "tokens")) as ws:
        await ws.send_json({"open": {"model": "tokens"}})
        assert "opened" in await ws.receive_json(timeout=20)
        await ws.send_json({"turn": {"turnId": "bad"}})  # no payload
        error = (await read_until(ws, lambda f: "turnError" in f))[-1]["turnError"]
        assert error["turnId"] == "bad"
        assert error["status"]["code"] == 3
        assert "payload" in error["status"]["message"]
        await ws.send_json({"turn": {"turnId": "ok", "json": {"text": "a b"}}})
        got = await read_until(ws, lambda f: "turnEnd" in f)
        tokens = [f["chunk"]["json"].get("token") for f in got if "chunk" in f]
        assert tokens == ["a", "b", None]


@pytest.mark.parametrize(
    ("model", "frames", "code", "reason", "needle"),
    [
        ("tokens", ['{"turn": {"turnId": "t"}}'], 3, "INVALID_ARGUMENT", "must be `open`"),
        ("tokens", ['{"open": {}}', '{"turn": '], 3, "MALFORMED_JSON", "frame 1"),
        ("tokens", ['{"open": {"colour": 1}}'], 3, "INVALID_JSON_FIELD", "frame 0"),
        ("tokens", ['{"open": {}, "open": {}}'], 3, "MALFORMED_JSON", "frame 0"),
        ("tokens", ['{"open": {"model": "chat"}}'], 3, "INVALID_ARGUMENT", "path names"),
        ("nope", ['{"open": {}}'], 5, "UNKNOWN_MODEL", "unknown model"),
        ("async-only", ['{"open": {}}'], 9, "WRONG_MODE", "mode"),
    ],
)
async def test_an_error_that_ends_the_session(
    http: aiohttp.ClientSession,
    server: Sagewire,
    model: str,
    frames: list[str],
    code: int,
    reason: str,
    needle: str,
) -> None:
    """A last frame carries the google.rpc.Status; the close code is 4000 + its code."""
    async with http.ws_connect(url(server, model)) as ws:
        for frame in frames:
            await ws.send_str(frame)
        received = await frames_until_closed(ws)
        assert ws.close_code == 4000 + code
    status = received[-1]["error"]
    assert status["code"] == code
    assert _reason(status) == reason
    assert needle in status["message"]


async def test_a_binary_frame_is_refused(http: aiohttp.ClientSession, server: Sagewire) -> None:
    async with http.ws_connect(url(server, "tokens")) as ws:
        await ws.send_bytes(b'{"open": {}}')
        received = await frames_until_closed(ws)
        assert ws.close_code == 4003
    assert "text frame" in received[-1]["error"]["message"]


async def test_session_limits_are_the_cores(http: aiohttp.ClientSession, server: Sagewire) -> None:
    async with http.ws_connect(url(server, "chat-idle")) as ws:
        await ws.send_json({"open": {}})
        received = await frames_until_closed(ws)
        assert ws.close_code == 4004
    assert _reason(received[-1]["error"]) == "SESSION_IDLE_TIMEOUT"


async def test_grpc_timeout_bounds_the_session(
    http: aiohttp.ClientSession, server: Sagewire
) -> None:
    async with http.ws_connect(url(server, "tokens"), headers={"Grpc-Timeout": "300m"}) as ws:
        await ws.send_json({"open": {}})
        await ws.send_json({"turn": {"turnId": "t", "json": {"text": "a b", "delay_ms": 30000}}})
        received = await frames_until_closed(ws)
        assert ws.close_code == 4004
    # The running turn and then the session end at the caller's deadline (DEADLINE_EXCEEDED).
    assert received[-1]["error"]["code"] == 4
    assert "Grpc-Timeout" in received[-1]["error"]["message"]


async def test_a_plain_get_is_told_to_upgrade(
    http: aiohttp.ClientSession, server: Sagewire
) -> None:
    async with http.get(url(server, "tokens")) as response:
        status = await response.json()
        assert response.status == 400
        assert "WebSocket" in status["message"]


async def test_closing_the_socket_cancels_the_running_turn(
    http: aiohttp.ClientSession, server: Sagewire, emulator: RunningEmulator
) -> None:
    stats = emulator.stats("tokens")
    aborted = stats.streams_aborted
    words = " ".join(f"w{i}" for i in range(200))
    async with http.ws_connect(url(server, "tokens")) as ws:
        await ws.send_json({"open": {}})
        # 20 s: still running when the socket closes, however slowly that happens.
        await ws.send_json({"turn": {"turnId": "t", "json": {"text": words, "delay_ms": 100}}})
        await read_until(ws, lambda f: "chunk" in f)
    deadline = time.monotonic() + 20
    while stats.streams_aborted == aborted:
        assert time.monotonic() < deadline, "the upstream stream was not cancelled"
        await asyncio.sleep(0.02)
    assert stats.active_streams == 0


async def test_a_bidi_route_over_websocket(http: aiohttp.ClientSession, server: Sagewire) -> None:
    async with http.ws_connect(url(server, "bidi-echo")) as ws:
        await ws.send_json({"open": {}})
        await ws.send_json({"turn": {"turnId": "t1", "text": "hello"}})
        got = await read_until(ws, lambda f: "chunk" in f)
        await ws.send_json({"close": {}})
        await frames_until_closed(ws)
        assert ws.close_code == 1000
    chunk = got[-1]["chunk"]
    assert chunk["turnId"] == "t1"
    assert chunk["dataType"] == "DATA_TYPE_UTF8"
    assert base64.b64decode(chunk["body"]) == b"HELLO"  # bidi-echo answers in upper case
