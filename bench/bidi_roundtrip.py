"""Per-part round trip on an HTTP/2 bidirectional stream, SDK called directly (via sagewire's
adapter, sagewire.aws.bidi) against the local emulator, with and without TCP_NODELAY.

    .venv/bin/python bench/bidi_roundtrip.py [--parts 200] [--streams 5] [--size 64]

The emulator (HTTP/2 + TLS, bidi-echo) runs on its own event loop in a thread, so the client's
loop measures only the client. Per part: send one part, wait for its echo (the input stays
open), next part. Also: first part of a stream (includes TCP + TLS + HTTP/2 set-up) and
half-close → drained. Results go in docs/benchmarks.md ("Bidirectional streams").
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sagewire.aws.bidi import SageMakerBidi
from sagewire.config.settings import AwsSettings
from sagewire.core.types import BidiPart, BidiRequest
from sagewire.emulator.server import RunningEmulator, running_emulator

ECHO = BidiRequest("bidi-echo")


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
    print(
        f"{args.streams} streams x {args.parts} parts of {args.size} B, one part in flight, "
        f"emulator bidi-echo over TLS + HTTP/2 on loopback ({os.cpu_count()} CPUs)\n"
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
