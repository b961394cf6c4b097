"""Converse at scale: sagewire's RSS and turn latency with many idle sessions and some busy ones.

    python -m bench.converse_sessions                       1,000 idle + 50 active, 15 s
    python -m bench.converse_sessions --idle 100 --active 10 --duration 3   smoke run

Runs the SageMaker emulator (its stateful `chat` model) in this process and sagewire as its own
process (`sagewire serve`, so its RSS is sagewire alone), both on loopback. It opens the idle
sessions (each a Converse stream with a SageMaker stateful session that then sends nothing),
then runs the active sessions in a closed loop (send a turn, wait for its turn_end, repeat) for
`--duration` seconds, sampling sagewire's RSS. Prints one Markdown table. Every phase is
bounded by `--timeout`; sagewire is stopped and every stream cancelled on exit or failure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psutil
from google.protobuf import json_format, struct_pb2

from sagewire.emulator import EmulatorConfig, EndpointConfig, running_emulator
from sagewire.v1 import converse_pb2, inference_service_pb2_grpc, invoke_pb2

READY = re.compile(r"sagewire ready on (\S+)")
TEXT = "the quick brown fox jumps over the lazy dog"  # 11 JSON lines per answer
CONFIG = """
[server]
listen = "127.0.0.1:0"
shutdown_grace_s = 2
log_level = "WARNING"

[aws]
runtime_endpoint_url = "{url}"
max_pool_connections = 512
max_attempts = 1

[routes.chat]
endpoint = "chat"
mode = "stream"
framing = "lines"
max_concurrency = 10000

# The same model without sessions, for the InvokeStream reference.
[routes.plain]
endpoint = "chat"
mode = "stream"
framing = "lines"
max_concurrency = 10000

[routes.chat.converse]
sessions = true
open_body = '{{"requestType": "NEW_SESSION"}}'
close_body = '{{"requestType": "CLOSE"}}'
idle_timeout_s = 3600
"""


@dataclass
class Sagewire:
    popen: subprocess.Popen[str]
    target: str
    process: psutil.Process = field(init=False)

    def __post_init__(self) -> None:
        self.process = psutil.Process(self.popen.pid)

    def rss_mib(self) -> float:
        return float(self.process.memory_info().rss) / 2**20


@contextmanager
def sagewire_process(config: Path, timeout_s: float) -> Iterator[Sagewire]:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
    popen = subprocess.Popen(
        [str(Path(sys.executable).parent / "sagewire"), "serve", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    ready, target = threading.Event(), []

    def drain() -> None:
        assert popen.stderr is not None
        for line in popen.stderr:
            if (match := READY.search(line)) and not ready.is_set():
                target.append(match.group(1))
                ready.set()

    threading.Thread(target=drain, daemon=True).start()
    try:
        if not ready.wait(timeout_s):
            raise RuntimeError("sagewire did not start")
        yield Sagewire(popen, target[0])
    finally:
        popen.terminate()
        try:
            popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()


def _turn(turn_id: str) -> converse_pb2.ConverseRequest:
    value = json_format.ParseDict({"text": TEXT}, struct_pb2.Value())
    return converse_pb2.ConverseRequest(turn=converse_pb2.ConverseTurn(turn_id=turn_id, json=value))


OPEN = converse_pb2.ConverseRequest(open=converse_pb2.ConverseOpen(model="chat"))


async def open_session(stub: inference_service_pb2_grpc.InferenceServiceAsyncStub) -> Any:
    call: Any = stub.Converse()  # type: ignore[call-arg]  # requests go through call.write()
    await call.write(OPEN)
    opened = await call.read()
    if opened.WhichOneof("kind") != "opened" or not opened.opened.session_id:
        raise RuntimeError(f"Converse did not open a session: {opened}")
    return call


@dataclass
class Latencies:
    turn_ms: list[float] = field(default_factory=list)
    first_chunk_ms: list[float] = field(default_factory=list)


async def converse_loop(call: Any, until: float, into: Latencies, prefix: str = "t") -> None:
    """Closed loop: one turn at a time until `until` (monotonic)."""
    n = 0
    while time.monotonic() < until:
        n += 1
        sent = time.perf_counter()
        await call.write(_turn(f"{prefix}{n}"))
        first = None
        while True:
            message = await call.read()
            kind = message.WhichOneof("kind")
            if kind == "chunk" and first is None:
                first = time.perf_counter()
            elif kind == "turn_end":
                break
            elif kind == "turn_error":
                raise RuntimeError(message.turn_error.status.message)
        done = time.perf_counter()
        into.turn_ms.append((done - sent) * 1e3)
        into.first_chunk_ms.append(((first or done) - sent) * 1e3)


async def invoke_stream_loop(stub: Any, until: float, into: list[float]) -> None:
    """The same answer through InvokeStream, one call at a time, for comparison."""
    request = invoke_pb2.InvokeStreamRequest(model="plain", json=_turn("").turn.json)
    while time.monotonic() < until:
        sent = time.perf_counter()
        async for _ in stub.InvokeStream(request):
            pass
        into.append((time.perf_counter() - sent) * 1e3)


async def sample_rss(sagewire: Sagewire, stop: asyncio.Event, into: list[float]) -> None:
    while not stop.is_set():
        into.append(sagewire.rss_mib())
        await asyncio.sleep(0.2)


async def finish(call: Any) -> None:
    """Half-close and drain: sagewire closes the SageMaker session and ends with OK."""
    await call.done_writing()
    while await call.read() is not grpc.aio.EOF:  # type: ignore[attr-defined]
        pass


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@asynccontextmanager
async def channels(target: str, count: int) -> AsyncIterator[list[grpc.aio.Channel]]:
    # Several connections, so no single HTTP/2 connection carries every stream.
    opened = [grpc.aio.insecure_channel(target) for _ in range(count)]
    try:
        yield opened
    finally:
        for channel in opened:
            await channel.close(grace=None)


async def run(args: argparse.Namespace) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    config = EmulatorConfig(endpoints={"chat": EndpointConfig(model="chat")})
    async with running_emulator(config) as emulator:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "sagewire.toml"
            path.write_text(CONFIG.format(url=emulator.url), encoding="utf-8")
            with sagewire_process(path, args.timeout) as sagewire:
                async with channels(sagewire.target, args.channels) as chans:
                    stubs = [inference_service_pb2_grpc.InferenceServiceStub(c) for c in chans]
                    async with asyncio.timeout(args.timeout):
                        rows = await measure(args, sagewire, stubs, emulator.sessions("chat"))
    return rows


async def measure(
    args: argparse.Namespace, sagewire: Sagewire, stubs: list[Any], table: Any
) -> list[tuple[str, str]]:
    # Warm-up: one session, a few turns, so lazy imports and pools are not counted as sessions.
    warm, alone = await open_session(stubs[0]), Latencies()
    await converse_loop(warm, time.monotonic() + 0.5, Latencies())
    await converse_loop(warm, time.monotonic() + 2.0, alone, "ref")  # unloaded reference
    await finish(warm)
    baseline = sagewire.rss_mib()
    closed_before = table.counters.closed

    started = time.perf_counter()
    idle: list[Any] = []
    for batch in range(0, args.idle, 100):
        size = min(100, args.idle - batch)
        idle += await asyncio.gather(
            *(open_session(stubs[(batch + i) % len(stubs)]) for i in range(size))
        )
    open_s = time.perf_counter() - started
    await asyncio.sleep(1.0)  # let allocations settle
    with_idle = sagewire.rss_mib()

    active = await asyncio.gather(
        *(open_session(stubs[i % len(stubs)]) for i in range(args.active))
    )
    latencies, rss, stop = Latencies(), [with_idle], asyncio.Event()
    sampler = asyncio.create_task(sample_rss(sagewire, stop, rss))
    until = time.monotonic() + args.duration
    t0, cpu0, own0 = time.perf_counter(), sagewire.process.cpu_times(), os.times()
    await asyncio.gather(*(converse_loop(call, until, latencies) for call in active))
    elapsed = time.perf_counter() - t0
    cpu1, own1 = sagewire.process.cpu_times(), os.times()
    sagewire_cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / elapsed
    bench_cpu = (own1.user + own1.system - own0.user - own0.system) / elapsed
    stop.set()
    await sampler
    live = len(table.live_ids())
    await asyncio.gather(*(finish(call) for call in [*idle, *active]))
    closed = table.counters.closed - closed_before

    streamed: list[float] = []
    until = time.monotonic() + args.duration / 3
    t0 = time.perf_counter()
    await asyncio.gather(
        *(invoke_stream_loop(stubs[i % len(stubs)], until, streamed) for i in range(args.active))
    )
    stream_rate = len(streamed) / (time.perf_counter() - t0)

    turns = len(latencies.turn_ms)
    per_session_kib = (with_idle - baseline) * 1024 / max(args.idle, 1)
    return [
        ("idle sessions (open Converse + SageMaker session, no turns)", f"{args.idle:,}"),
        ("active sessions (closed loop, one turn at a time)", f"{args.active:,}"),
        ("SageMaker sessions live during the run / closed at the end", f"{live:,} / {closed:,}"),
        ("time to open the idle sessions", f"{open_s:.1f} s ({args.idle / open_s:,.0f}/s)"),
        ("sagewire RSS after warm-up", f"{baseline:.0f} MiB"),
        ("sagewire RSS with the idle sessions open", f"{with_idle:.0f} MiB"),
        ("RSS per idle session", f"{per_session_kib:.0f} KiB"),
        ("sagewire RSS peak while the active sessions run", f"{max(rss):.0f} MiB"),
        ("turns completed", f"{turns:,} in {elapsed:.1f} s ({turns / elapsed:,.0f}/s)"),
        (
            "turn latency p50 / p90 / p99 (send → turn_end)",
            " / ".join(f"{pct(latencies.turn_ms, q):.1f}" for q in (0.5, 0.9, 0.99)) + " ms",
        ),
        (
            "first chunk p50 / p99",
            " / ".join(f"{pct(latencies.first_chunk_ms, q):.1f}" for q in (0.5, 0.99)) + " ms",
        ),
        ("turn latency mean", f"{statistics.fmean(latencies.turn_ms):.1f} ms"),
        (
            "CPU while active: sagewire / client + emulator process",
            f"{sagewire_cpu:.0%} / {bench_cpu:.0%} of one core",
        ),
        (
            "reference: one session alone, turn p50 / p99",
            " / ".join(f"{pct(alone.turn_ms, q):.1f}" for q in (0.5, 0.99)) + " ms",
        ),
        (
            f"reference: the same answer by InvokeStream, {args.active} callers, p50 / p99",
            " / ".join(f"{pct(streamed, q):.1f}" for q in (0.5, 0.99))
            + f" ms ({stream_rate:,.0f}/s)",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.converse_sessions", description=__doc__)
    parser.add_argument("--idle", type=int, default=1000, help="idle sessions (default 1000)")
    parser.add_argument("--active", type=int, default=50, help="active sessions (default 50)")
    parser.add_argument("--duration", type=float, default=15.0, help="active phase, seconds")
    parser.add_argument("--channels", type=int, default=8, help="client connections")
    parser.add_argument("--timeout", type=float, default=180.0, help="bound of the whole run")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    rows = asyncio.run(run(args))
    cpu = psutil.cpu_count() or 0
    print(
        f"Converse sessions: {cpu} CPUs, Python {sys.version.split()[0]}, {time.strftime('%F')}, "
        f"load average {load_before:.1f} before / {os.getloadavg()[0]:.1f} after"
    )
    print()
    print("| measure | value |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
