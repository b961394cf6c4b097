"""Shared fixtures: one emulator (demo endpoints + a fake model container) per test session,
reset before each test, and a plain aioboto3 client pointed at it over loopback."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aioboto3
import botocore.config
import pytest
import pytest_asyncio
from aiohttp import web

from sagewire.emulator import (
    EmulatorConfig,
    EndpointConfig,
    RunningEmulator,
    default_config,
    running_emulator,
)

# total_max_attempts counts the first try; botocore's "max_attempts" counts retries only
# (see test_invoke.py::test_max_attempts_counts_retries_not_attempts).
NO_RETRIES = botocore.config.Config(
    retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=10
)


@dataclass
class FakeContainer:
    """A SageMaker-contract model container on loopback, recording what it received.

    Behaviour is picked by the forwarded custom attributes: ``mode=error`` answers 400,
    ``mode=stream`` streams ``line-<i>`` chunks (``count``/``delay_ms`` from the JSON body),
    ``mode=hang`` answers after 5 s, ``mode=break`` cuts the connection after two chunks,
    anything else answers with a JSON echo of the forwarded headers and body.
    """

    url: str = ""
    requests: list[dict[str, str]] = field(default_factory=list)
    streams_cancelled: int = 0


FORWARDED = (
    "Content-Type",
    "Accept",
    "X-Amzn-SageMaker-Custom-Attributes",
    "X-Amzn-SageMaker-Target-Model",
    "X-Amzn-SageMaker-Session-Id",
)


def _container_app(record: FakeContainer) -> web.Application:
    async def invocations(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: request.headers[k] for k in FORWARDED if k in request.headers}
        record.requests.append(headers)
        mode = headers.get("X-Amzn-SageMaker-Custom-Attributes", "")
        if mode == "mode=error":
            return web.Response(status=400, text="container rejects this input")
        if mode == "mode=hang":
            await asyncio.sleep(5)
        if mode == "mode=break":
            response = web.StreamResponse(headers={"Content-Type": "text/plain"})
            await response.prepare(request)
            await response.write(b"partial-1\n")
            await response.write(b"partial-2\n")
            assert request.transport is not None
            request.transport.abort()
            return response
        if mode == "mode=stream":
            spec = json.loads(body)
            response = web.StreamResponse(headers={"Content-Type": "text/plain"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            try:
                for i in range(spec["count"]):
                    await response.write(f"line-{i}\n".encode())
                    await asyncio.sleep(spec.get("delay_ms", 0) / 1000)
            except (asyncio.CancelledError, ConnectionError):
                record.streams_cancelled += 1
                raise
            await response.write_eof()
            return response
        return web.json_response(
            {"headers": headers, "body": body.decode()},
            headers={"X-Amzn-SageMaker-Custom-Attributes": "seen=yes"},
        )

    app = web.Application()
    app.router.add_post("/invocations", invocations)
    return app


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest_asyncio.fixture(scope="session")
async def container() -> AsyncIterator[FakeContainer]:
    record = FakeContainer()
    runner = web.AppRunner(_container_app(record), handler_cancellation=True, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    record.url = f"http://{host}:{port}"
    yield record
    await runner.cleanup()


@pytest_asyncio.fixture(scope="session")
async def session_emulator(container: FakeContainer) -> AsyncIterator[RunningEmulator]:
    endpoints = dict(default_config().endpoints)
    endpoints["container"] = EndpointConfig(container_url=container.url)
    endpoints["container-impatient"] = EndpointConfig(
        container_url=container.url, container_timeout_s=0.2
    )
    endpoints["container-down"] = EndpointConfig(container_url=f"http://127.0.0.1:{_closed_port()}")
    async with running_emulator(EmulatorConfig(endpoints=endpoints)) as emulator:
        yield emulator


@pytest.fixture
def emulator(session_emulator: RunningEmulator, container: FakeContainer) -> RunningEmulator:
    """The session emulator with configured faults restored and all counters at zero."""
    session_emulator.reset()
    container.requests.clear()
    container.streams_cancelled = 0
    return session_emulator


ClientFactory = Callable[..., Any]
Eventually = Callable[..., Awaitable[None]]


def _make_client(url: str, config: botocore.config.Config = NO_RETRIES) -> Any:
    session = aioboto3.Session(
        aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
    )
    return session.client("sagemaker-runtime", endpoint_url=url, config=config)


@pytest.fixture
def make_client() -> ClientFactory:
    """``make_client(url, config)``: an aioboto3 client context manager, for odd configs."""
    return _make_client


@pytest_asyncio.fixture(scope="session")
async def client(session_emulator: RunningEmulator) -> AsyncIterator[Any]:
    """A plain aioboto3 sagemaker-runtime client against the emulator, no retries."""
    async with _make_client(session_emulator.url) as sagemaker:
        yield sagemaker


async def _eventually(check: Callable[[], bool], within_s: float = 10.0) -> None:
    # Polling: the counters are plain ints with nothing to wait on.
    for _ in range(int(within_s / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    if not check():
        pytest.fail(f"condition still false after {within_s} s")


@pytest.fixture
def eventually() -> Eventually:
    """``await eventually(check, within_s=10.0)``: wait for a server-side effect to land."""
    return _eventually
