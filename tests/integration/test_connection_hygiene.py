"""Connection hygiene: a client that opens connections and idles, never finishes its
handshake, or sends half a request frame does not hold a connection forever. Raw sockets
speaking just enough HTTP/2 to be each kind of bad client."""

from __future__ import annotations

import asyncio
import struct
import time

import pytest

from sagewire.emulator.server import RunningEmulator
from sagewire.transports.grpc.server import grpc_options
from support import settings_for, start_sagewire

pytestmark = pytest.mark.asyncio(loop_scope="session")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
BOUNDS = {
    "handshake_timeout_s": 1,
    "max_connection_idle_s": 1,
    "max_connection_age_s": 1,
    "max_connection_age_grace_s": 1,
}


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes([kind, flags])
        + struct.pack(">I", stream)
        + payload
    )


async def _seconds_until_closed(reader: asyncio.StreamReader, limit_s: float = 60) -> float:
    """Read (and drop) whatever the server sends until it closes the connection."""
    started = time.monotonic()
    async with asyncio.timeout(limit_s):
        while True:
            try:
                if not await reader.read(65536):
                    break
            except ConnectionError:
                break
    return time.monotonic() - started


@pytest.mark.parametrize(
    "sends",
    [
        pytest.param(b"", id="nothing"),
        pytest.param(PREFACE[:10], id="half-the-preface"),
        pytest.param(PREFACE + _frame(4, 0, 0, b""), id="preface-then-idle"),
        pytest.param(
            # HEADERS for stream 1 announcing 200 bytes of header block, then only 5 of them.
            PREFACE + _frame(4, 0, 0, b"") + _frame(1, 4, 1, b"\x00" * 200)[: 9 + 5],
            id="half-a-request-frame",
        ),
    ],
)
async def test_stalled_clients_are_disconnected(emulator: RunningEmulator, sends: bytes) -> None:
    async with start_sagewire(emulator, server=BOUNDS) as sw:
        reader, writer = await asyncio.open_connection("127.0.0.1", sw.server.port)
        try:
            writer.write(sends)
            await writer.drain()
            # Each bound is 1-2 s; generous headroom for a loaded machine, far from "forever".
            assert await _seconds_until_closed(reader) < 30
        finally:
            writer.close()


async def test_without_the_bounds_a_half_request_holds_its_connection(
    emulator: RunningEmulator,
) -> None:
    """The control: with the default (long) bounds the same half frame is still connected."""
    half = PREFACE + _frame(4, 0, 0, b"") + _frame(1, 4, 1, b"\x00" * 200)[: 9 + 5]
    async with start_sagewire(emulator) as sw:
        reader, writer = await asyncio.open_connection("127.0.0.1", sw.server.port)
        try:
            writer.write(half)
            await writer.drain()
            with pytest.raises(TimeoutError):
                await _seconds_until_closed(reader, limit_s=3)
        finally:
            writer.close()


async def test_defaults_bound_every_connection(emulator: RunningEmulator) -> None:
    options = dict(grpc_options(settings_for(emulator)))
    assert options["grpc.server_handshake_timeout_ms"] == 10_000
    assert options["grpc.max_connection_idle_ms"] == 300_000
    assert options["grpc.max_connection_age_ms"] == 3_600_000
    assert options["grpc.max_connection_age_grace_ms"] == 600_000
