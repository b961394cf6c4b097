"""CORS over real sockets: preflights sent the way a browser sends them (curl and aiohttp),
off by default, on for configured origins only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest_asyncio
from auth_support import API_KEY_LINES, BATCH_KEY

from sagewire.emulator.server import RunningEmulator
from support import Sagewire, start_sagewire

TOOL = "https://tools.example.com"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def with_cors(emulator: RunningEmulator) -> AsyncIterator[Sagewire]:
    rest = {"cors_allow_origins": [TOOL, "http://localhost:3000"], "cors_max_age_s": 120}
    async with start_sagewire(emulator.url, rest={"listen": "127.0.0.1:0", **rest}) as server:
        yield server


def _preflight(origin: str, method: str = "POST") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "content-type, grpc-timeout",
    }


async def test_a_browser_preflight_with_curl(with_cors: Sagewire) -> None:
    args = [f"-H{name}: {value}" for name, value in _preflight(TOOL).items()]
    process = await asyncio.create_subprocess_exec(
        "curl", "--silent", "--show-error", "-i", "-X", "OPTIONS", *args,
        with_cors.rest_url + "/v1/models/echo:invoke",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    head = out.decode().lower()
    assert head.startswith("http/1.1 204")
    assert f"access-control-allow-origin: {TOOL}" in head
    assert "access-control-allow-methods: get, post, options" in head
    assert "access-control-allow-headers: content-type, grpc-timeout" in head
    assert "access-control-max-age: 120" in head


async def test_allowed_origin_reads_answers_streams_and_errors(with_cors: Sagewire) -> None:
    origin = {"Origin": TOOL}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        base = with_cors.rest_url
        for method, path, body in [
            ("POST", "/v1/models/echo:invoke", b'{"json": {}}'),
            ("POST", "/v1/models/tokens:invokeStream", b'{"json": {"text": "a"}}'),
            ("POST", "/v1/models/echo/invocations", b"{}"),
            ("POST", "/v1/models/nope:invoke", b"{}"),
            ("GET", "/v1/openapi.json", b""),
        ]:
            async with http.request(method, base + path, data=body, headers=origin) as response:
                await response.read()
                assert response.headers["Access-Control-Allow-Origin"] == TOOL, path
                assert "Retry-After" in response.headers["Access-Control-Expose-Headers"]
                assert "Origin" in response.headers.getall("Vary")


async def test_other_origins_are_refused_with_a_reason(with_cors: Sagewire) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        async with http.options(
            with_cors.rest_url + "/v1/models", headers=_preflight("https://evil.example.com")
        ) as response:
            status = await response.json()
            assert response.status == 403
            assert "Access-Control-Allow-Origin" not in response.headers
        assert status["details"][0]["reason"] == "CORS_ORIGIN_NOT_ALLOWED"
        async with http.get(
            with_cors.rest_url + "/v1/models", headers={"Origin": "https://evil.example.com"}
        ) as response:
            assert response.status == 200  # not a browser: nothing to enforce server-side
            assert "Access-Control-Allow-Origin" not in response.headers


async def test_cors_is_off_by_default(sagewire: Sagewire) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        async with http.options(
            sagewire.rest_url + "/v1/models/echo:invoke", headers=_preflight(TOOL)
        ) as response:
            assert response.status == 405  # no preflight answer: browsers stay out
            assert "Access-Control-Allow-Origin" not in response.headers
        async with http.get(sagewire.rest_url + "/v1/models", headers={"Origin": TOOL}) as r:
            assert r.status == 200
            assert "Access-Control-Allow-Origin" not in r.headers


async def test_preflights_pass_before_authentication(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    """Browsers send no credentials on a preflight: it is answered before authentication,
    while the request itself is refused without them, readable by the page."""
    keys = tmp_path / "api-keys"
    keys.write_text(API_KEY_LINES)
    rest = {"listen": "127.0.0.1:0", "cors_allow_origins": [TOOL]}
    async with (
        start_sagewire(emulator.url, rest=rest, auth={"api_keys": {"file": str(keys)}}) as server,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
    ):
        url = server.rest_url + "/v1/models/echo:invoke"
        async with http.options(url, headers=_preflight(TOOL)) as response:
            assert response.status == 204
            assert response.headers["Access-Control-Allow-Origin"] == TOOL
        async with http.post(url, json={"json": {}}, headers={"Origin": TOOL}) as response:
            assert response.status == 401
            assert response.headers["Access-Control-Allow-Origin"] == TOOL
        headers = {"Origin": TOOL, "X-Api-Key": BATCH_KEY}
        async with http.post(url, json={"json": {}}, headers=headers) as response:
            assert response.status != 401
            assert response.headers["Access-Control-Allow-Origin"] == TOOL
