"""Every S3 call is bounded by aws.read_timeout_s and releases what it holds (issue 10, class 10).

The S3 here is a real TCP server that accepts connections, reads what it is sent and never
answers: botocore sends PutObject with `Expect: 100-continue`, and aiohttp then waits for the
interim answer with no read timeout at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest
import pytest_asyncio
from async_support import ASYNC_ROUTES, RESULTS, async_settings

from sagewire.aws.s3 import S3Store
from sagewire.config.settings import AwsSettings
from sagewire.core.async_types import S3Location
from sagewire.core.errors import SagewireError
from sagewire.emulator.server import RunningEmulator
from sagewire.v1 import async_jobs_pb2 as pb
from support import Sagewire, failure, start_sagewire

READ_TIMEOUT_S = 1.0
ROUTES = {
    **ASYNC_ROUTES,
    # One slot: a call that kept its slot would turn the next one away.
    "one-at-a-time": {
        "endpoint": "echo",
        "mode": "async",
        "max_concurrency": 1,
        "timeout_s": 60,
        "async": RESULTS,
    },
}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def silent_s3() -> AsyncIterator[str]:
    """http:// URL of a server that takes every byte and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        for writer in held:
            writer.close()
        await server.wait_closed()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gateway(async_emulator: RunningEmulator, silent_s3: str) -> AsyncIterator[Sagewire]:
    settings = async_settings(silent_s3)
    settings["routes"] = ROUTES
    settings["aws"] = {**settings["aws"], "read_timeout_s": READ_TIMEOUT_S}
    async with start_sagewire(async_emulator.url, **settings) as server:
        yield server


async def test_submit_to_a_silent_s3_ends_at_the_read_timeout(gateway: Sagewire) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.inference.SubmitAsync(
            pb.SubmitAsyncRequest(model="one-at-a-time", body=b"x" * 1000), timeout=30
        )
    f = failure(caught.value)
    # Not the route's timeout_s (60 s) nor the caller's 30 s: S3's own silence.
    assert (f.code, f.reason) == (grpc.StatusCode.DEADLINE_EXCEEDED, "UPSTREAM_READ_TIMEOUT")


@pytest.mark.parametrize("size", [1000, 6 * 1024 * 1024], ids=["one-put", "multipart"])
async def test_upload_without_a_deadline_ends_and_frees_its_slot(
    gateway: Sagewire, size: int
) -> None:
    async def requests() -> AsyncIterator[pb.UploadAsyncRequest]:
        yield pb.UploadAsyncRequest(header=pb.UploadAsyncHeader(model="one-at-a-time"))
        for start in range(0, size, 1024 * 1024):
            yield pb.UploadAsyncRequest(chunk=b"x" * min(1024 * 1024, size - start))

    for _ in range(2):  # the second finds the route's only slot free again
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gateway.inference.UploadAsync(requests())  # no deadline
        f = failure(caught.value)
        assert (f.code, f.reason) == (grpc.StatusCode.DEADLINE_EXCEEDED, "UPSTREAM_READ_TIMEOUT")


async def test_every_s3_read_on_a_silent_s3_ends_at_the_read_timeout(silent_s3: str) -> None:
    # The adapter itself (probes and reads of async results), over the same real socket.
    settings = AwsSettings(s3_endpoint_url=silent_s3, read_timeout_s=READ_TIMEOUT_S, max_attempts=1)
    where = S3Location("results", "job/out")
    async with S3Store(settings, part_bytes=5 * 1024 * 1024, chunk_bytes=65536) as store:
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: store.head(where),
            lambda: store.read(where, 4096),
            lambda: store.put(where, b"x", "text/plain"),
        ]
        for call in calls:
            with pytest.raises(SagewireError) as caught:
                await asyncio.wait_for(call(), 20)
            assert caught.value.reason == "UPSTREAM_READ_TIMEOUT"
        with pytest.raises(SagewireError) as caught:
            await asyncio.wait_for(_open(store, where), 20)
        assert caught.value.reason == "UPSTREAM_READ_TIMEOUT"


async def _open(store: S3Store, where: S3Location) -> None:
    async with store.open(where):
        pass


async def test_the_bytes_of_an_object_received_before_a_reset_are_relayed_first() -> None:
    # An S3 that starts a 1,000-byte object, sends 100 bytes and resets the connection.
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nContent-Type: text/plain\r\n\r\n"
            + b"y" * 100
        )
        await writer.drain()
        writer.transport.abort()

    server = await asyncio.start_server(cut, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    settings = AwsSettings(s3_endpoint_url=url, read_timeout_s=5, max_attempts=1)
    received: list[bytes] = []
    try:
        async with S3Store(settings, part_bytes=5 * 1024 * 1024, chunk_bytes=65536) as store:
            with pytest.raises(SagewireError) as caught:
                await asyncio.wait_for(_read_all(store, S3Location("results", "o"), received), 20)
    finally:
        server.close()
        await server.wait_closed()
    assert caught.value.reason == "S3_UNREACHABLE"
    assert b"".join(received) == b"y" * 100


async def _read_all(store: S3Store, where: S3Location, into: list[bytes]) -> None:
    async with store.open(where) as found:
        assert found is not None
        async for chunk in found.chunks:
            into.append(chunk)
