"""`make bench`: sagewire next to its alternatives, on this machine, in one bounded run.

    python -m bench.run            full run (~8 minutes), rewrites docs/benchmarks.md
    python -m bench.run --quick    ~1 minute smoke run, prints only (unless --out is given)

Starts the emulator, sagewire, the FastAPI reference and the bare gRPC echo server as separate
processes on loopback, drives each from load-generator processes (bench.loadgen), samples CPU
and RSS with psutil, and prints one set of tables (bench.report). Every load loop is bounded in
calls and time, every process has a deadline, and all of them are stopped on exit, Ctrl-C or
failure. Repeats run the contenders in a rotating order so drift spreads over all of them.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import json
import math
import signal
import sys
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from bench import machine, report
from bench.configs import HELD_COUNT, write_configs
from bench.payloads import firehose_request, json_payload, parts_in, tokens_request
from bench.report import PAYLOADS, Results, size_label, unary_key
from bench.services import REPO, Service, ServiceDied, Services, base_env, spawn, stop

DOC = REPO / "docs" / "benchmarks.md"


@dataclass(frozen=True)
class Plan:
    name: str
    repeats: int
    warmup_s: float
    duration_s: float
    open_duration_s: float
    stream_bytes: int
    part_size: int
    open_streams: tuple[int, ...] = (500, 1000)
    held_calls: int = HELD_COUNT
    max_calls: int = 200_000
    reference_hold: bool = True  # also hold calls open through the FastAPI reference


FULL = Plan(
    "full",
    repeats=3,
    warmup_s=0.5,
    duration_s=2.0,
    open_duration_s=3.0,
    stream_bytes=1024 * 1024,
    part_size=1024,
)
QUICK = Plan(
    "quick",
    repeats=1,
    warmup_s=0.2,
    duration_s=0.5,
    open_duration_s=0.8,
    stream_bytes=256 * 1024,
    part_size=1024,
    open_streams=(1000,),
    reference_hold=False,
)


_STARTED = time.monotonic()


def log(message: str) -> None:
    print(f"[{time.monotonic() - _STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


# -- running one load generator -----------------------------------------------------------------

OnHolding = Callable[[Mapping[str, Any]], Awaitable[None]]


async def _drain(stream: asyncio.StreamReader, into: deque[str]) -> None:
    while raw := await stream.readline():
        into.append(raw.decode(errors="replace"))


def _busy_s() -> float:
    """CPU seconds the whole machine has spent not idle, all cores together."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


async def run_loadgen(
    job: Mapping[str, Any],
    watch: Mapping[str, Service],
    expected_s: float,
    on_holding: OnHolding | None = None,
    ours: Sequence[Service] = (),
) -> list[dict[str, Any]]:
    """Run one load-generator process; returns its results, each with `<role>_cpu_s` for every
    watched service, measured over the run's window (between its start and result events),
    and `foreign_cpu_s`: what the machine spent on processes other than `ours` and the load
    generator in that window (other users of a shared machine show up here, not as noise)."""
    process = await spawn([sys.executable, "-m", "bench.loadgen"], base_env(), stdin=True)
    assert process.stdin is not None
    assert process.stdout is not None
    assert process.stderr is not None
    # On stdin, not argv: a 256 KB payload is past the kernel's limit for one argument.
    process.stdin.write(json.dumps(job).encode() + b"\n")
    errors: deque[str] = deque(maxlen=40)
    drain = asyncio.create_task(_drain(process.stderr, errors))
    results: list[dict[str, Any]] = []
    cpu_at_start: dict[str, float] = {}
    ours_at_start = busy_at_start = 0.0
    try:
        async with asyncio.timeout(expected_s + 30):
            while raw := await process.stdout.readline():
                event = json.loads(raw)
                if event["event"] == "start":
                    cpu_at_start = {role: s.cpu_s() for role, s in watch.items()}
                    ours_at_start = sum(s.cpu_s() for s in ours)
                    busy_at_start = _busy_s()
                elif event["event"] == "holding":
                    if on_holding is not None:
                        await on_holding(event)
                    process.stdin.write(b"release\n")
                    await process.stdin.drain()
                elif event["event"] == "result":
                    for role, service in watch.items():
                        if role in cpu_at_start:
                            event[f"{role}_cpu_s"] = service.cpu_s() - cpu_at_start[role]
                    if cpu_at_start:
                        mine = sum(s.cpu_s() for s in ours) - ours_at_start
                        event["foreign_cpu_s"] = max(
                            0.0, _busy_s() - busy_at_start - mine - event["client_cpu_s"]
                        )
                    results.append(event)
            await process.wait()
    except TimeoutError:
        log(f"load generator over its {expected_s + 30:.0f}s budget; killed")
    finally:
        await stop(process)
        await asyncio.gather(drain, return_exceptions=True)
    if process.returncode not in (0, None) and not results:
        log("load generator failed:\n" + "".join(errors))
    return results


def make_job(
    kind: str, target: str, model: str, body: bytes, runs: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    return {
        "kind": kind,
        "target": target,
        "model": model,
        "body_b64": base64.b64encode(body).decode(),
        "runs": runs,
        **extra,
    }


def _stream_job(target: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Streams on the `stall` route: one part arrives, then the stream stays open."""
    return make_job("grpc-stream", target, "stall", tokens_request(8), runs)


# -- the benchmark ------------------------------------------------------------------------------


class Bench:
    def __init__(self, plan: Plan, services: Services) -> None:
        self.plan = plan
        self.services = services
        self.results = Results(repeats=plan.repeats)
        self.s: dict[str, Service] = {}
        self._sagewire_config = Path()

    async def start(self, directory: Path) -> None:
        emulator_config, self._sagewire_config = write_configs(directory)
        emu = await self.services.emulator(emulator_config)
        self.s = {
            "emulator": emu,
            "sagewire": await self.services.sagewire(self._sagewire_config, emu.address),
            # The same gateway on the full aioboto3 client: lean ÷ aioboto3 in one run.
            "sagewire-aioboto3": await self.services.sagewire(
                self._sagewire_config,
                emu.address,
                extra_env={"SAGEWIRE_AWS__CLIENT": "aioboto3"},
                name="sagewire-aioboto3",
            ),
            "fastapi": await self.services.fastapi(emu.address),
            "grpc-echo": await self.services.grpc_echo(),
        }
        await asyncio.sleep(1.0)  # let start-up allocations settle before the idle sample
        self.results.memory["sagewire, idle (fresh)"] = self.s["sagewire"].rss_mb()
        self.results.memory["FastAPI reference, idle (fresh)"] = self.s["fastapi"].rss_mb()
        log("services up: " + ", ".join(f"{k} {v.address}" for k, v in self.s.items()))

    async def _fresh(self, key: str) -> Service:
        """Replace a gateway by a new process, so a memory figure is not the high-water mark
        of whatever ran before it."""
        await self.services.retire(self.s[key])
        emu = self.s["emulator"].address
        if key == "sagewire":
            self.s[key] = await self.services.sagewire(self._sagewire_config, emu)
        else:
            self.s[key] = await self.services.fastapi(emu)
        await asyncio.sleep(0.5)
        return self.s[key]

    async def _load(
        self,
        job: Mapping[str, Any],
        server: str | None,
        expected_s: float,
        on_holding: OnHolding | None = None,
    ) -> list[dict[str, Any]]:
        watch = {"emulator": self.s["emulator"]}
        if server is not None:
            watch["server"] = self.s[server]
        return await run_loadgen(job, watch, expected_s, on_holding, self.services.running)

    def _unary_target(self, key: str) -> tuple[str, str, str, str | None]:
        """(driver kind, target, model or path, server process key) for a unary contender."""
        emu = self.s["emulator"].address
        return {
            "sagewire": ("grpc", self.s["sagewire"].address, "echo", "sagewire"),
            "sagewire-aioboto3": (
                "grpc",
                self.s["sagewire-aioboto3"].address,
                "echo",
                "sagewire-aioboto3",
            ),
            "direct": ("boto", emu, "echo", None),
            "fastapi": ("http", self.s["fastapi"].address, "/v1/models/echo:invoke", "fastapi"),
            "grpc-echo": ("grpc", self.s["grpc-echo"].address, "echo", "grpc-echo"),
            "raw-http": ("http", emu, "/endpoints/echo/invocations", None),
            "rest": ("rest", self.s["sagewire"].rest_address, "/v1/models/echo:invoke", "sagewire"),
            "rest-raw": (
                "http",
                self.s["sagewire"].rest_address,
                "/v1/models/echo/invocations",
                "sagewire",
            ),
        }[key]

    def _closed(self, concurrency: int) -> dict[str, Any]:
        p = self.plan
        return {
            "mode": "closed",
            "concurrency": concurrency,
            "warmup_s": p.warmup_s,
            "duration_s": p.duration_s,
            "max_calls": p.max_calls,
        }

    async def unary(self, key: str, payload: int, repeat: int) -> None:
        kind, target, model, server = self._unary_target(key)
        runs = [self._closed(c) for c in report.CONCURRENCIES]
        body = json_payload(payload)
        job = make_job(kind, target, model, body, runs, expect_bytes=len(body))
        expected = len(runs) * (self.plan.warmup_s + self.plan.duration_s) + 5
        results = await self._load(job, server, expected)
        for concurrency, result in zip(report.CONCURRENCIES, results, strict=False):
            self.results.record(unary_key(key, payload, concurrency), repeat, result)

    async def open_loop(self, key: str, rate: float, repeat: int) -> None:
        kind, target, model, server = self._unary_target(key)
        body = json_payload(PAYLOADS[0])
        duration = self.plan.open_duration_s
        run = {"mode": "open", "rate": rate, "duration_s": duration, "max_in_flight": 1000}
        job = make_job(kind, target, model, body, [run], expect_bytes=len(body))
        for result in await self._load(job, server, duration + 5):
            self.results.record(f"open/{key}", repeat, result)

    def _stream_target(self, key: str, endpoint: str) -> tuple[str, str, str]:
        emu = self.s["emulator"].address
        return {
            "sagewire": ("grpc-stream", self.s["sagewire"].address, endpoint),
            "direct": ("boto-stream", emu, endpoint),
            "grpc-echo": ("grpc-stream", self.s["grpc-echo"].address, endpoint),
            "raw-http": ("http-stream", emu, endpoint),
        }[key]

    async def streams(self, key: str, repeat: int) -> None:
        p = self.plan
        server = key if key in ("sagewire", "grpc-echo") else None
        # sagewire's route tokens-raw relays the tokens endpoint's parts unchanged.
        kind, target, model = self._stream_target(
            key, "tokens-raw" if key == "sagewire" else "tokens"
        )
        job = make_job(kind, target, model, tokens_request(8), [self._closed(1)])
        for result in await self._load(job, server, p.warmup_s + p.duration_s + 5):
            self.results.record(f"ttfp/{key}", repeat, result)
        kind, target, model = self._stream_target(key, "firehose")
        body = firehose_request(p.stream_bytes, p.part_size)
        job = make_job(
            kind,
            target,
            model,
            body,
            [self._closed(1), self._closed(16)],
            expect_items=parts_in(p.stream_bytes, p.part_size),
            item_bytes=p.part_size,
        )
        results = await self._load(job, server, 2 * (p.warmup_s + p.duration_s) + 5)
        for concurrency, result in zip((1, 16), results, strict=False):
            self.results.record(f"parts/{key}/{concurrency}", repeat, result)

    async def _emulator_stats(self, endpoint: str) -> dict[str, int]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(self.s["emulator"].address + "/_emulator/stats") as response,
        ):
            stats: dict[str, dict[str, int]] = await response.json()
        return stats.get(endpoint, {})

    async def hold(
        self,
        label: str,
        server: str,
        job_for: Callable[[str], dict[str, Any]],
        endpoint: str,
        count: int,
        counter: str,
    ) -> None:
        """Hold `count` calls open through a fresh `server` process, record its RSS, then
        check that every cancelled call was also dropped upstream (the emulator's `counter`
        grew by `count`)."""
        service = await self._fresh(server)
        before = (await self._emulator_stats(endpoint)).get(counter, 0)

        async def sample(event: Mapping[str, Any]) -> None:
            await asyncio.sleep(0.5)  # allocations made while the last calls opened
            samples = []
            for _ in range(5):
                samples.append(service.rss_mb())
                await asyncio.sleep(0.1)
            self.results.memory[label] = max(samples)
            if event["reached"] < count:
                self.results.notes.append(
                    f"{label}: only {event['reached']} of {count} calls were in flight"
                )

        await self._load(job_for(service.address), None, 60, on_holding=sample)
        deadline = time.monotonic() + 5
        dropped = 0
        while time.monotonic() < deadline:
            dropped = (await self._emulator_stats(endpoint)).get(counter, 0) - before
            if dropped >= count:
                break
            await asyncio.sleep(0.1)
        self.results.notes.append(
            f"{label}: after the callers cancelled, {dropped} of {count} upstream requests "
            f"were dropped at the emulator within 5 s (`{counter}`)"
        )
        log(f"{label}: {self.results.memory.get(label, math.nan):.1f} MB")

    async def memory(self) -> None:
        """RSS of fresh processes holding calls open (each hold on its own new process)."""
        self.results.memory["sagewire, idle after the load runs"] = self.s["sagewire"].rss_mb()
        held = self.plan.held_calls
        emu = self.s["emulator"].address
        body = json_payload(PAYLOADS[0])
        unary = [{"mode": "hold", "count": held, "emulator_url": emu, "endpoint": "held"}]
        for count in self.plan.open_streams:
            streams = [{"mode": "hold", "count": count}]
            await self.hold(
                f"sagewire, {count:,} open streams",
                "sagewire",
                functools.partial(_stream_job, runs=streams),
                "stall",
                count,
                "streams_aborted",
            )
        await self.hold(
            f"sagewire, {held:,} unary calls in flight",
            "sagewire",
            lambda target: make_job("grpc", target, "held", body, unary),
            "held",
            held,
            "invocations_cancelled",
        )
        if not self.plan.reference_hold:
            return
        # Last: uvicorn does not cancel a handler whose client left, so these calls stay
        # open upstream until the emulator answers them.
        await self.hold(
            f"FastAPI reference, {held:,} unary calls in flight",
            "fastapi",
            lambda target: make_job("http", target, "/v1/models/held:invoke", body, unary),
            "held",
            held,
            "invocations_cancelled",
        )

    def _open_rate(self) -> float:
        """Half the slower gateway's median throughput @64 (1 KB), so every contender can
        keep up and latency, not saturation, is compared."""
        rates = [
            self.results.spread(unary_key(k, PAYLOADS[0], 64), "calls_per_s").median
            for k in ("sagewire", "fastapi")
        ]
        known = [r for r in rates if not math.isnan(r)]
        return max(10.0, math.floor(min(known) / 2 / 10) * 10) if known else 100.0

    async def run(self, rate: float | None) -> Results:
        p = self.plan
        keys = list(report.CONTENDERS)
        for repeat in range(p.repeats):
            order = keys[repeat % len(keys) :] + keys[: repeat % len(keys)]
            for payload in PAYLOADS:
                for key in order:
                    log(f"repeat {repeat + 1}/{p.repeats}: unary {size_label(payload)} {key}")
                    await self.unary(key, payload, repeat)
        open_rate = rate or self._open_rate()
        self.results.settings["open-loop rate"] = f"{open_rate:g} calls/s"
        for repeat in range(p.repeats):
            for key in keys[repeat % len(keys) :] + keys[: repeat % len(keys)]:
                log(f"repeat {repeat + 1}/{p.repeats}: open loop {open_rate:g}/s {key}")
                await self.open_loop(key, open_rate, repeat)
        for repeat in range(p.repeats):
            for key in report.STREAMERS:
                log(f"repeat {repeat + 1}/{p.repeats}: streams {key}")
                await self.streams(key, repeat)
        log("memory: holding calls and streams open on fresh processes")
        await self.memory()
        return self.results


def _settings(plan: Plan) -> dict[str, str]:
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": f"{plan.name} (`python -m bench.run{' --quick' if plan.name == 'quick' else ''}`)",
        "repeats": f"{plan.repeats}, contenders in rotating order",
        "closed-loop runs": f"{plan.warmup_s:g} s warm-up, then {plan.duration_s:g} s or "
        f"{plan.max_calls:,} calls, at concurrency 1, 16 and 64",
        "open-loop runs": f"{plan.open_duration_s:g} s at a fixed rate",
        "stream parts": f"{plan.stream_bytes // 1024} KiB in {plan.part_size} B parts "
        f"({parts_in(plan.stream_bytes, plan.part_size)} parts per stream)",
        "topology": "one process each: emulator, sagewire (lean), sagewire (aioboto3), FastAPI "
        "(uvicorn, 1 worker), gRPC "
        "echo, and one load-generator process per run; none pinned, all share the cores",
    }


async def measure(plan: Plan, rate: float | None) -> Results:
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None:
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    log(f"benchmark plan: {plan.name}")
    async with Services() as services:
        bench = Bench(plan, services)
        with tempfile.TemporaryDirectory(prefix="sagewire-bench-") as directory:
            await bench.start(Path(directory))
            results = await bench.run(rate)
    results.settings = {**_settings(plan), **results.settings}
    return results


def write(out: Path, text: str) -> None:
    """Replace the results block of `out`, keeping every hand-written section (re-read now,
    so edits made by others while the benchmark ran are kept)."""
    existing = out.read_text(encoding="utf-8") if out.exists() else None
    out.write_text(report.merge_block(existing, text, TEMPLATE), encoding="utf-8")
    log(f"wrote {out}")


TEMPLATE = """# Benchmarks

`make bench` (`python -m bench.run`) measures sagewire next to the alternatives a team would
pick instead, on one machine in one run. See the sections after the results for how to read
them.

{results}
"""


def cli() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="~1 minute smoke run")
    parser.add_argument(
        "--rps",
        type=float,
        help="open-loop rate (default: half the slower gateway's throughput at concurrency 64)",
    )
    parser.add_argument("--out", type=Path, help="write the results block into this file")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    try:
        results = asyncio.run(measure(plan, args.rps))
    except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C, or SIGTERM (cancels main)
        log("interrupted; every process was stopped")
        sys.exit(130)
    except ServiceDied as exc:
        # Also what a Ctrl-C in a terminal can look like: the servers get the SIGINT too.
        log(f"{exc}every other process was stopped")
        sys.exit(1)
    text = report.render(results, machine.describe())
    print(text)
    out: Path | None = args.out or (None if args.quick or args.no_write else DOC)
    if out is not None:
        write(out, text)


if __name__ == "__main__":
    cli()
