"""sagewire's HTTP/2 bidirectional-stream adapter against the emulator, over real TLS + HTTP/2.

The adapter (sagewire.aws.bidi) drives the official SDK's CRT transport; the emulator's HTTP/2
listener plays SageMaker. Nothing is stubbed: duplex, errors, shutdown and leaks are observed on
real sockets and in the emulator's counters.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import pytest_asyncio

from sagewire.aws.bidi import SageMakerBidi
from sagewire.config.settings import AwsSettings
from sagewire.core.errors import ErrorKind, SagewireError
from sagewire.core.types import BidiPart, BidiRequest
from sagewire.emulator import EmulatorConfig, EndpointConfig, Fault, RunningEmulator
from sagewire.emulator.server import running_emulator

CONFIG = EmulatorConfig(
    endpoints={
        "bidi-echo": EndpointConfig(model="bidi-echo", variants=["AllTraffic", "B"]),
        "echo": EndpointConfig(model="echo"),  # no bidirectional support
    }
)
ECHO = BidiRequest("bidi-echo")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def bidi_emulator() -> AsyncIterator[RunningEmulator]:
    async with running_emulator(CONFIG, bidi=True) as emu:
        yield emu


@pytest.fixture
def emu(bidi_emulator: RunningEmulator) -> RunningEmulator:
    bidi_emulator.reset()
    return bidi_emulator


def _settings(emu: RunningEmulator, **overrides: Any) -> AwsSettings:
    values: dict[str, Any] = {"bidi_endpoint_url": emu.bidi_url, "ca_bundle": str(emu.ca_file)}
    return AwsSettings(**{**values, **overrides})


@asynccontextmanager
async def adapter(emu: RunningEmulator, **kwargs: Any) -> AsyncIterator[SageMakerBidi]:
    aws = {k: kwargs.pop(k) for k in list(kwargs) if k in AwsSettings.model_fields}
    async with SageMakerBidi(_settings(emu, **aws), **kwargs) as bidi:
        yield bidi


@pytest_asyncio.fixture(loop_scope="session")
async def bidi(emu: RunningEmulator) -> AsyncIterator[SageMakerBidi]:
    async with adapter(emu) as client:
        yield client


async def eventually(check: Callable[[], bool], within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"condition still false after {within_s} s")
        await asyncio.sleep(0.01)


def _port(url: str | None) -> int:
    assert url is not None
    return int(url.rsplit(":", 1)[1])


def sockets_to(port: int) -> list[socket.socket]:
    """Duplicates of this process's TCP sockets connected to `port` (close them after use)."""
    found = []
    seen = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            inode = os.readlink(f"/proc/self/fd/{name}")
            if not inode.startswith("socket:") or inode in seen:
                continue  # one socket may sit behind several fds
            seen.add(inode)
            sock = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue
        try:
            if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.getpeername()[1] == port:
                found.append(sock)
                continue
        except OSError:
            pass
        sock.close()
    return found


def connections_to(port: int) -> int:
    sockets = sockets_to(port)
    for sock in sockets:
        sock.close()
    return len(sockets)


# -- duplex and parts --------------------------------------------------------------------------


async def test_duplex_each_echo_arrives_before_the_next_part_is_sent(
    emu: RunningEmulator, bidi: SageMakerBidi
) -> None:
    async with bidi.open_bidi(ECHO) as stream:
        for word in (b"one", b"two", b"three"):
            await stream.send(BidiPart(word))
            echo = await asyncio.wait_for(stream.receive(), timeout=2)
            assert echo == BidiPart(word.upper(), "UTF8", partial=True)
            # The input is still open while the answer came back: true duplex.
            assert emu.stats("bidi-echo").active_bidi_streams == 1
        assert (await stream.start()).invoked_variant == "AllTraffic"
        await stream.close_input()
        assert await stream.receive() is None
    stats = emu.stats("bidi-echo")
    assert (stats.bidi_parts_received, stats.bidi_parts_sent) == (3, 3)
    assert stats.bidi_streams_completed == 1


async def test_binary_and_text_parts_keep_their_data_type(bidi: SageMakerBidi) -> None:
    async with bidi.open_bidi(ECHO) as stream:
        await stream.send(BidiPart(b"\x00\xffabc", "BINARY"))
        assert await stream.receive() == BidiPart(b"\x00\xffABC", "BINARY", partial=True)
        await stream.send(BidiPart("grüße".encode(), "UTF8"))
        assert await stream.receive() == BidiPart("GRüßE".encode(), "UTF8", partial=True)


async def test_a_complete_part_gets_the_final_message(bidi: SageMakerBidi) -> None:
    async with bidi.open_bidi(ECHO) as stream:
        await stream.send(BidiPart(b"hello "))
        await stream.receive()
        await stream.send(BidiPart(b"world", partial=False))
        assert await stream.receive() == BidiPart(b"WORLD", "UTF8", partial=True)
        final = await stream.receive()
        assert final is not None
        assert (final.data_type, final.partial) == ("UTF8", False)
        assert json.loads(final.data) == {"final": "hello world"}


async def test_half_close_drains_the_output(emu: RunningEmulator, bidi: SageMakerBidi) -> None:
    async with bidi.open_bidi(ECHO) as stream:
        for i in range(5):
            await stream.send(BidiPart(f"p{i}".encode()))
        await stream.close_input()
        answers = []
        while (part := await stream.receive()) is not None:
            answers.append(part.data)
        assert answers == [b"P0", b"P1", b"P2", b"P3", b"P4"]
    await eventually(lambda: emu.stats("bidi-echo").bidi_streams_completed == 1)


async def test_target_variant_reaches_sagemaker(bidi: SageMakerBidi) -> None:
    async with bidi.open_bidi(BidiRequest("bidi-echo", target_variant="B")) as stream:
        assert (await stream.start()).invoked_variant == "B"


async def test_send_after_half_close_is_refused(bidi: SageMakerBidi) -> None:
    async with bidi.open_bidi(ECHO) as stream:
        await stream.close_input()
        with pytest.raises(SagewireError) as caught:
            await stream.send(BidiPart(b"late"))
    assert caught.value.reason == "INPUT_CLOSED"


# -- errors -------------------------------------------------------------------------------------


async def _error_at_start(bidi: SageMakerBidi, request: BidiRequest = ECHO) -> SagewireError:
    async with bidi.open_bidi(request) as stream:
        with pytest.raises(SagewireError) as caught:
            await stream.receive()
    return caught.value


@pytest.mark.parametrize(
    ("code", "error_code", "kind", "reason"),
    [
        ("model_stream_error", "StreamBroken", ErrorKind.UNAVAILABLE, "MODEL_STREAM_BROKEN"),
        (
            "model_stream_error",
            "ModelInvocationTimeExceeded",
            ErrorKind.DEADLINE_EXCEEDED,
            "MODEL_STREAM_TIMEOUT",
        ),
        (
            "internal_stream_failure",
            "StreamBroken",
            ErrorKind.UNAVAILABLE,
            "SAGEMAKER_STREAM_FAILURE",
        ),
    ],
)
async def test_stream_errors_after_n_parts(
    emu: RunningEmulator,
    bidi: SageMakerBidi,
    code: Any,
    error_code: Any,
    kind: ErrorKind,
    reason: str,
) -> None:
    emu.set_fault(
        "bidi-echo",
        Fault(stream_error_after_parts=2, stream_error=code, stream_error_code=error_code),
    )
    async with bidi.open_bidi(ECHO) as stream:
        for word in (b"a", b"b"):
            await stream.send(BidiPart(word))
            assert (await stream.receive()) == BidiPart(word.upper(), "UTF8")
        await stream.send(BidiPart(b"c"))
        with pytest.raises(SagewireError) as caught:
            await stream.receive()
    assert (caught.value.kind, caught.value.reason) == (kind, reason)
    assert "Injected stream error" in caught.value.message
    assert emu.stats("bidi-echo").bidi_streams_failed == 1


@pytest.mark.parametrize(
    ("fault", "kind", "reason"),
    [
        (Fault(error="model_error"), ErrorKind.INTERNAL, "MODEL_ERROR"),
        (Fault(error="throttling"), ErrorKind.RESOURCE_EXHAUSTED, "THROTTLED"),
        (Fault(error="service_unavailable"), ErrorKind.UNAVAILABLE, "SAGEMAKER_UNAVAILABLE"),
        (Fault(error="internal_failure"), ErrorKind.INTERNAL, "SAGEMAKER_INTERNAL_FAILURE"),
        (Fault(error="model_not_ready"), ErrorKind.UNAVAILABLE, "MODEL_NOT_READY"),
    ],
)
async def test_errors_before_the_stream(
    emu: RunningEmulator, bidi: SageMakerBidi, fault: Fault, kind: ErrorKind, reason: str
) -> None:
    emu.set_fault("bidi-echo", fault)
    error = await _error_at_start(bidi)
    assert (error.kind, error.reason) == (kind, reason)
    if reason == "MODEL_ERROR":
        assert error.model_failure is not None
        assert error.model_failure.original_status_code == 500


async def test_unknown_endpoint_variant_and_non_bidi_endpoint(bidi: SageMakerBidi) -> None:
    missing = await _error_at_start(bidi, BidiRequest("no-such-endpoint"))
    assert (missing.kind, missing.reason) == (ErrorKind.NOT_FOUND, "ENDPOINT_NOT_FOUND")
    variant = await _error_at_start(bidi, BidiRequest("bidi-echo", target_variant="Nope"))
    assert variant.reason == "SAGEMAKER_VALIDATION"
    assert "Nope" in variant.message
    plain = await _error_at_start(bidi, BidiRequest("echo"))
    assert plain.reason == "SAGEMAKER_VALIDATION"
    assert "bidirectional" in plain.message


async def test_an_untrusted_certificate_fails_within_the_bound() -> None:
    # The CRT (s2n) reports a failed certificate check only after a 10-30 s anti-timing
    # "blinding" delay, as UPSTREAM_TLS_FAILURE (tests/unit/test_bidi_errors.py); the read
    # timeout bounds the wait. An emulator of its own: the half-made connection lingers.
    # The clock starts once the emulator and the adapter are up (their start-up is not the
    # bound under test); 8 s leaves a loaded machine room and stays below the CRT's 10 s.
    async with (
        running_emulator(CONFIG, bidi=True) as other,
        adapter(other, ca_bundle=None, read_timeout_s=0.5) as untrusting,
    ):
        started = time.monotonic()
        error = await _error_at_start(untrusting)
        took = time.monotonic() - started
    assert error.reason == "UPSTREAM_READ_TIMEOUT"
    assert took < 8


async def test_a_missing_ca_bundle_is_named(emu: RunningEmulator) -> None:
    with pytest.raises(SagewireError) as caught:
        async with adapter(emu, ca_bundle="/nonexistent/ca.pem"):
            pass
    assert caught.value.reason == "CA_BUNDLE_MISSING"
    assert "/nonexistent/ca.pem" in caught.value.message


async def test_nothing_listening_is_unreachable(emu: RunningEmulator) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    async with adapter(emu, bidi_endpoint_url=f"https://127.0.0.1:{closed_port}") as nowhere:
        error = await _error_at_start(nowhere)
    assert (error.kind, error.reason) == (ErrorKind.UNAVAILABLE, "RUNTIME_UNREACHABLE")


async def test_a_dropped_connection_is_a_lost_stream(
    emu: RunningEmulator, bidi: SageMakerBidi
) -> None:
    emu.set_fault("bidi-echo", Fault(drop_after_parts=1))
    async with bidi.open_bidi(ECHO) as stream:
        await stream.send(BidiPart(b"a"))
        assert await stream.receive() == BidiPart(b"A", "UTF8")
        await stream.send(BidiPart(b"b"))
        with pytest.raises(SagewireError) as caught:
            await stream.receive()
    assert caught.value.reason == "UPSTREAM_CONNECTION_LOST"


async def test_silence_past_the_read_timeout(emu: RunningEmulator) -> None:
    # The read timeout also bounds start() (the wait for the response headers: a new TLS
    # connection), so it must leave a loaded machine room for that: 2 s, not 0.3 s.
    async with adapter(emu, read_timeout_s=2) as impatient, impatient.open_bidi(ECHO) as stream:
        await stream.start()
        started = time.monotonic()
        with pytest.raises(SagewireError) as caught:
            await stream.receive()  # bidi-echo only answers input
        took = time.monotonic() - started
    assert caught.value.reason == "UPSTREAM_READ_TIMEOUT"
    assert 1.9 < took < 10


async def test_a_model_that_reads_no_input_fills_the_bounded_buffer(emu: RunningEmulator) -> None:
    emu.set_fault("bidi-echo", Fault(stall_after_parts=0))
    async with adapter(emu, send_timeout_s=0.3) as bidi, bidi.open_bidi(ECHO) as stream:

        async def flood() -> None:
            for _ in range(200):  # 200 x 32 KiB: far past flow-control window + SDK buffer
                await stream.send(BidiPart(b"x" * 32768, "BINARY"))

        with pytest.raises(SagewireError) as caught:
            await flood()
    assert (caught.value.kind, caught.value.reason) == (
        ErrorKind.RESOURCE_EXHAUSTED,
        "UPSTREAM_INPUT_STALLED",
    )


# -- shutdown -----------------------------------------------------------------------------------


async def test_upstream_closing_first_ends_cleanly_without_hanging(emu: RunningEmulator) -> None:
    # A close bound far beyond the wait below: a close that waits for the SDK's buffer to drain
    # (it never does once the server ended the stream) fails here however loaded the machine is.
    emu.set_fault("bidi-echo", Fault(close_after_parts=1))
    async with adapter(emu, close_timeout_s=60) as bidi:

        async def exchange() -> None:
            async with bidi.open_bidi(ECHO) as stream:
                await stream.send(BidiPart(b"only"))
                assert await stream.receive() == BidiPart(b"ONLY", "UTF8")
                assert await stream.receive() is None  # the model ended; our input is open
                await stream.close_input()

        await asyncio.wait_for(exchange(), timeout=30)
    # The emulator counts the stream once its handler has returned, after the END_STREAM.
    await eventually(lambda: emu.stats("bidi-echo").bidi_streams_completed == 1, within_s=10)


async def test_cancelling_the_caller_closes_the_upstream_stream(emu: RunningEmulator) -> None:
    answered = asyncio.Event()
    # A close bound (60 s) far beyond the wait below: a cancel held up by a close that waits
    # fails here however loaded the machine is, and a prompt one passes on a loaded one too.
    async with adapter(emu, close_timeout_s=60) as bidi:

        async def caller() -> None:
            async with bidi.open_bidi(ECHO) as stream:
                await stream.send(BidiPart(b"hi"))
                await stream.receive()
                answered.set()
                await stream.receive()  # bidi-echo waits for more input: forever

        task = asyncio.create_task(caller())
        await asyncio.wait_for(answered.wait(), timeout=30)  # opening: a new TLS connection
        assert emu.stats("bidi-echo").active_bidi_streams == 1
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - started < 10
    await eventually(lambda: emu.stats("bidi-echo").bidi_streams_aborted == 1)
    assert emu.stats("bidi-echo").active_bidi_streams == 0


async def test_a_caller_deadline_closes_the_upstream_stream(
    emu: RunningEmulator, bidi: SageMakerBidi
) -> None:

    async def caller() -> None:
        # The deadline is set once the stream is open and answering: opening it (a new TLS
        # connection) is setup, which on a loaded machine can take longer than the deadline.
        async with asyncio.timeout(None) as deadline, bidi.open_bidi(ECHO) as stream:
            await stream.send(BidiPart(b"hi"))
            await stream.receive()
            deadline.reschedule(asyncio.get_running_loop().time() + 0.3)
            await stream.receive()  # never comes: the deadline ends the call

    with pytest.raises(TimeoutError):
        await caller()
    await eventually(lambda: emu.stats("bidi-echo").bidi_streams_aborted == 1)


async def test_100_sequential_streams_leak_no_connection_or_fd(
    emu: RunningEmulator, bidi: SageMakerBidi
) -> None:
    async def one() -> None:
        async with bidi.open_bidi(ECHO) as stream:
            await stream.send(BidiPart(b"x", partial=False))
            assert await stream.receive() is not None
            assert await stream.receive() is not None
            await stream.close_input()
            assert await stream.receive() is None

    await one()  # warm-up: the CRT creates its event loop and resolver lazily
    fds_before = len(os.listdir("/proc/self/fd"))
    for _ in range(100):
        await one()
    port = _port(emu.bidi_url)
    # Both ends live in this process (the emulator too), so wait for both to be gone.
    await eventually(lambda: connections_to(port) == 0)
    await eventually(lambda: len(os.listdir("/proc/self/fd")) <= fds_before, within_s=5)
    assert emu.stats("bidi-echo").bidi_streams_completed == 101
    assert emu.stats("bidi-echo").active_bidi_streams == 0


@pytest.mark.parametrize("nodelay", [True, False])
async def test_tcp_nodelay_is_set_on_the_upstream_socket(
    emu: RunningEmulator, nodelay: bool
) -> None:
    async with adapter(emu, tcp_nodelay=nodelay) as bidi, bidi.open_bidi(ECHO) as stream:
        await stream.send(BidiPart(b"x"))
        await stream.receive()
        sockets = sockets_to(_port(emu.bidi_url))
        try:
            assert len(sockets) == 1  # one connection per stream
            flag = sockets[0].getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        finally:
            for sock in sockets:
                sock.close()
    assert bool(flag) is nodelay
