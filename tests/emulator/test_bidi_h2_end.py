"""The emulator's HTTP/2 listener, seen by a raw h2 client: an answer that completes while the
client's input is still open leaves the client to end its side, as a real HTTP/2 server does,
instead of resetting the stream at once (the CRT client, which the SageMaker HTTP/2 SDK uses,
logs AWS_ERROR_HTTP_STREAM_HAS_COMPLETED when it is reset under a pending write)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.events

from sagewire.emulator import EmulatorConfig, EndpointConfig, Fault
from sagewire.emulator.server import running_emulator

Events = list[h2.events.Event]


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.events: Events = []

    def flush(self) -> None:
        self.writer.write(self.conn.data_to_send())

    async def until(self, done: Callable[[Events], bool], within_s: float) -> None:
        async with asyncio.timeout(within_s):
            while not done(self.events):
                data = await self.reader.read(65536)
                assert data, "connection closed"
                self.events += self.conn.receive_data(data)
                self.flush()


def _ended(stream_id: int) -> Callable[[Events], bool]:
    return lambda events: any(
        isinstance(e, h2.events.StreamEnded) and e.stream_id == stream_id for e in events
    )


def _reset(stream_id: int) -> Callable[[Events], bool]:
    return lambda events: any(
        isinstance(e, h2.events.StreamReset) and e.stream_id == stream_id for e in events
    )


async def _open(url: str, ca_file: str, path: str) -> tuple[RawClient, int]:
    where = urlsplit(url)
    context = ssl.create_default_context(cafile=ca_file)
    context.set_alpn_protocols(["h2"])
    reader, writer = await asyncio.open_connection(
        where.hostname, where.port, ssl=context, server_hostname=where.hostname
    )
    client = RawClient(reader, writer)
    client.conn.initiate_connection()
    stream_id = client.conn.get_next_available_stream_id()
    headers = [
        (":method", "POST"),
        (":scheme", "https"),
        (":authority", where.netloc),
        (":path", path),
        ("content-type", "application/vnd.amazon.eventstream"),
    ]
    client.conn.send_headers(stream_id, headers, end_stream=False)  # input stays open
    client.flush()
    return client, stream_id


async def test_an_answer_completed_early_waits_for_the_clients_end_of_stream() -> None:
    config = EmulatorConfig(endpoints={"bidi-echo": EndpointConfig(model="bidi-echo")})
    async with running_emulator(config, bidi=True) as emu:
        assert emu.bidi_url is not None
        path = "/endpoints/no-such-endpoint/invocations-bidirectional-stream"
        client, stream_id = await _open(emu.bidi_url, str(emu.ca_file), path)
        await client.until(_ended(stream_id), within_s=20)  # the 4xx answer, complete
        status = next(
            dict(e.headers or [])[b":status"]
            for e in client.events
            if isinstance(e, h2.events.ResponseReceived)
        )
        assert status.startswith(b"4")
        # The old listener reset the client's still-open input right after its END_STREAM.
        with contextlib.suppress(TimeoutError):
            await client.until(_reset(stream_id), within_s=1.0)
        assert not _reset(stream_id)(client.events)
        client.conn.end_stream(stream_id)  # the client ends its side: the stream closes
        client.flush()
        await client.writer.drain()
        client.writer.close()


async def test_the_close_fault_still_resets_open_input_at_once() -> None:
    config = EmulatorConfig(
        endpoints={"bidi-echo": EndpointConfig(model="bidi-echo", fault=Fault(close_after_parts=0))}
    )
    async with running_emulator(config, bidi=True) as emu:
        assert emu.bidi_url is not None
        path = "/endpoints/bidi-echo/invocations-bidirectional-stream"
        client, stream_id = await _open(emu.bidi_url, str(emu.ca_file), path)
        await client.until(_reset(stream_id), within_s=20)
        assert _ended(stream_id)(client.events)
        client.writer.close()


async def test_data_for_a_finished_stream_leaves_the_connection_working() -> None:
    # A client still sending on a stream the emulator already answered (an error before the
    # stream: here an unknown endpoint) must not take the connection down with it: the data
    # only refills the connection's flow-control window. Found by the chaos run.
    config = EmulatorConfig(endpoints={"bidi-echo": EndpointConfig(model="bidi-echo")})
    async with running_emulator(config, bidi=True) as emu:
        assert emu.bidi_url is not None
        path = "/endpoints/no-such-endpoint/invocations-bidirectional-stream"
        client, first = await _open(emu.bidi_url, str(emu.ca_file), path)
        await client.until(_ended(first), within_s=20)
        client.conn.send_data(first, b"x" * 1000)  # late input on the answered stream
        client.flush()
        second = client.conn.get_next_available_stream_id()
        client.conn.send_headers(
            second,
            [
                (":method", "POST"),
                (":scheme", "https"),
                (":authority", urlsplit(emu.bidi_url).netloc),
                (":path", path),
            ],
            end_stream=True,
        )
        client.flush()
        await client.until(_ended(second), within_s=20)  # answered on the same connection
        client.writer.close()
