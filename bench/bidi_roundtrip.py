"""Per-part round trip on an HTTP/2 bidirectional stream against the local emulator, in one run:
the SDK called directly (via sagewire's adapter, sagewire.aws.bidi) with and without
TCP_NODELAY, and the same stream through sagewire (Converse on a `bidi` route).

    .venv/bin/python -m bench.bidi_roundtrip [--parts 200] [--streams 5] [--size 64]

The emulator (HTTP/2 + TLS, bidi-echo) runs on its own event loop in a thread, so the client's
loop measures only the client. sagewire runs as its own process (`sagewire serve`, uvloop, as in
production) with one `bidi` route to that emulator; its client is grpc.aio on the bench loop.
Per part: send one part, wait for its echo (the input stays open), next part. Also: first part
of a stream (includes TCP + TLS + HTTP/2 set-up; through sagewire also the gRPC call and
`opened`) and half-close → drained. Results go in docs/benchmarks.md ("Bidirectional streams").
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from bench.converse_sessions import sagewire_process
from sagewire.aws.bidi import SageMakerBidi
from sagewire.config.settings import AwsSettings
from sagewire.core.types import BidiPart, BidiRequest
from sagewire.emulator.server import RunningEmulator, running_emulator
from sagewire.v1 import converse_pb2, inference_service_pb2_grpc

ECHO = BidiRequest("bidi-echo")
SAGEWIRE_CONFIG = """
[server]
listen = "127.0.0.1:0"
log_level = "WARNING"

[aws]
bidi_endpoint_url = "{url}"
ca_bundle = "{ca}"

[routes.bidi-echo]
endpoint = "bidi-echo"
mode = "bidi"
timeout_s = 600
"""
OPEN = converse_pb2.ConverseRequest(open=converse_pb2.ConverseOpen(model="bidi-echo"))


class EmulatorThread:
    """The emulator with its bidi listener, on a loop in a daemon thread."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.emulator: RunningEmulator | None = None
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with running_emulator(bidi=True) as emulator:
            self.emulator = emulator
            self.ready.set()
            await self._stop.wait()

    def __enter__(self) -> RunningEmulator:
        self._thread.start()
        if not self.ready.wait(10) or self.emulator is None:
            raise RuntimeError("emulator did not start")
        return self.emulator

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)


@dataclass
class Result:
    name: str
    per_part_ms: list[float] = field(default_factory=list)
    first_part_ms: list[float] = field(default_factory=list)
    drain_ms: list[float] = field(default_factory=list)


async def _stream(bidi: SageMakerBidi, parts: int, payload: bytes, result: Result) -> None:
    started = time.perf_counter()
    async with bidi.open_bidi(ECHO) as stream:
        for i in range(parts):
            sent = time.perf_counter()
            await stream.send(BidiPart(payload))
            echo = await stream.receive()
            assert echo is not None
            assert echo.data == payload.upper()
            elapsed = (time.perf_counter() - (started if i == 0 else sent)) * 1000
            (result.first_part_ms if i == 0 else result.per_part_ms).append(elapsed)
        closing = time.perf_counter()
        await stream.close_input()
        assert await stream.receive() is None
        result.drain_ms.append((time.perf_counter() - closing) * 1000)


def _part(text: str) -> converse_pb2.ConverseRequest:
    turn = converse_pb2.ConverseTurn(turn_id="t", text=text, partial=True)
    return converse_pb2.ConverseRequest(turn=turn)


async def _converse(
    stub: inference_service_pb2_grpc.InferenceServiceAsyncStub,
    parts: int,
    payload: bytes,
    result: Result,
) -> None:
    """The same stream through sagewire: one Converse, one turn of `parts` partial parts."""
    started = time.perf_counter()
    call: Any = stub.Converse(timeout=600)  # type: ignore[call-arg]  # writes via call.write()
    await call.write(OPEN)
    if (await call.read()).WhichOneof("kind") != "opened":
        raise RuntimeError("Converse did not open")
    text = payload.decode()
    for i in range(parts):
        sent = time.perf_counter()
        await call.write(_part(text))
        echo = await call.read()
        assert echo.chunk.body == payload.upper(), echo
        elapsed = (time.perf_counter() - (started if i == 0 else sent)) * 1000
        (result.first_part_ms if i == 0 else result.per_part_ms).append(elapsed)
    closing = time.perf_counter()
    await call.done_writing()
    while await call.read() is not grpc.aio.EOF:  # type: ignore[attr-defined]
        pass  # the turn's turn_end, then the end of the stream
    result.drain_ms.append((time.perf_counter() - closing) * 1000)
    if await call.code() is not grpc.StatusCode.OK:
        raise RuntimeError(f"Converse ended with {await call.code()}")


async def run_sagewire(target: str, args: argparse.Namespace) -> Result:
    result = Result("through sagewire (Converse, own process)")
    payload = b"x" * args.size
    async with grpc.aio.insecure_channel(target) as channel:
        stub = inference_service_pb2_grpc.InferenceServiceStub(channel)
        await _converse(stub, 3, payload, Result("warm-up"))
        for _ in range(args.streams):
            await _converse(stub, args.parts, payload, result)
    return result


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(
    name: str, make: Callable[[], Awaitable[SageMakerBidi]], args: argparse.Namespace
) -> Result:
    result = Result(name)
    payload = b"x" * args.size
    bidi = await make()
    async with bidi:
        await _stream(bidi, 3, payload, Result("warm-up"))
        for _ in range(args.streams):
            await _stream(bidi, args.parts, payload, result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", type=int, default=200, help="parts per stream")
    parser.add_argument("--streams", type=int, default=5, help="streams per variant")
    parser.add_argument("--size", type=int, default=64, help="bytes per part")
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    with EmulatorThread() as emulator:
        settings = AwsSettings(bidi_endpoint_url=emulator.bidi_url, ca_bundle=str(emulator.ca_file))

        async def variants() -> list[Result]:
            results = []
            for name, nodelay in (
                ("SDK direct, TCP_NODELAY", True),
                ("SDK direct, Nagle on", False),
            ):

                async def make(nodelay: bool = nodelay) -> SageMakerBidi:
                    return SageMakerBidi(settings, tcp_nodelay=nodelay)

                results.append(await run(name, make, args))
            return results

        results = asyncio.run(variants())
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "sagewire.toml"
            config.write_text(
                SAGEWIRE_CONFIG.format(url=emulator.bidi_url, ca=emulator.ca_file),
                encoding="utf-8",
            )
            with sagewire_process(config, timeout_s=60) as sagewire:
                results.append(asyncio.run(run_sagewire(sagewire.target, args)))
    print(
        f"{args.streams} streams x {args.parts} parts of {args.size} B, one part in flight, "
        f"emulator bidi-echo over TLS + HTTP/2 on loopback ({os.cpu_count()} CPUs); sagewire "
        "with TCP_NODELAY\n"
    )
    print(
        "| variant | per part p50 | p90 | p99 | mean "
        "| first part (incl. connect) p50 | close→drained p50 |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        p = r.per_part_ms
        print(
            f"| {r.name} | {_pct(p, 0.5):.2f} ms | {_pct(p, 0.9):.2f} ms | {_pct(p, 0.99):.2f} ms "
            f"| {statistics.fmean(p):.2f} ms | {_pct(r.first_part_ms, 0.5):.2f} ms "
            f"| {_pct(r.drain_ms, 0.5):.2f} ms |"
        )


if __name__ == "__main__":
    main()
