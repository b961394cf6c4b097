"""The load generator: its own process, one client, a list of bounded runs.

    python -m bench.loadgen < job   (the job is the first line of stdin, as JSON)

The job names a driver (see bench.drivers) and runs of three shapes:

- closed: `concurrency` workers each call again as soon as their call returns, for
  `duration_s` or `max_calls` calls, whichever comes first, after `warmup_s` of the same.
- open: calls start on a fixed schedule (`rate` per second for `duration_s`) whether or not
  earlier ones finished; latency counts from the scheduled start, so a slow server is not
  hidden by a generator that waits for it (no coordinated omission). At most `max_in_flight`
  are outstanding; a start past that is counted as dropped.
- hold: `count` calls are opened and held open (the server side must keep them open, e.g.
  an emulator endpoint that stalls); once they are all in flight the generator prints
  `holding`, waits for a line on stdin (or `hold_s`), then cancels them all.

Output is one JSON object per line on stdout: `{"event": "start", "run": i}` when a run's
measured window opens, `{"event": "holding", ...}` for holds, `{"event": "result", ...}` when
a run ends. The orchestrator samples server CPU and memory on those events.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import time
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import uvloop

from bench.drivers import Driver, Spec, open_driver
from bench.stats import percentile

CALL_TIMEOUT_S = 30.0
MAX_ERRORS_KEPT = 3


@dataclass
class Sample:
    """What one run saw."""

    latencies: list[float] = field(default_factory=list)
    first_item: list[float] = field(default_factory=list)
    items: int = 0
    started: int = 0
    errors: int = 0
    dropped: int = 0
    error_texts: list[str] = field(default_factory=list)

    def ok(self, latency: float, first: float, items: int) -> None:
        self.latencies.append(latency)
        self.first_item.append(first)
        self.items += items

    def fail(self, exc: BaseException) -> None:
        self.errors += 1
        if len(self.error_texts) < MAX_ERRORS_KEPT:
            self.error_texts.append(f"{type(exc).__name__}: {str(exc)[:200]}")

    def summary(self, elapsed: float, cpu_s: float) -> dict[str, Any]:
        ms = [x * 1e3 for x in self.latencies]
        first_ms = [x * 1e3 for x in self.first_item]
        return {
            "calls": len(self.latencies),
            "errors": self.errors,
            "dropped": self.dropped,
            "error_texts": self.error_texts,
            "elapsed_s": elapsed,
            "items": self.items,
            "calls_per_s": len(self.latencies) / elapsed if elapsed > 0 else 0.0,
            "items_per_s": self.items / elapsed if elapsed > 0 else 0.0,
            "p50_ms": percentile(ms, 50),
            "p99_ms": percentile(ms, 99),
            "first_p50_ms": percentile(first_ms, 50),
            "first_p99_ms": percentile(first_ms, 99),
            "client_cpu_s": cpu_s,
        }


async def _one(driver: Driver, sample: Sample, started: float) -> None:
    try:
        async with asyncio.timeout(CALL_TIMEOUT_S):
            outcome = await driver.call()
    except Exception as exc:
        sample.fail(exc)
        return
    done = time.perf_counter()
    sample.ok(done - started, outcome.first_at - started, outcome.items)


async def closed_loop(
    driver: Driver, concurrency: int, duration_s: float, max_calls: int
) -> tuple[Sample, float]:
    sample = Sample()
    begin = time.perf_counter()
    stop = begin + duration_s

    async def worker() -> None:
        while time.perf_counter() < stop and sample.started < max_calls:
            sample.started += 1
            await _one(driver, sample, time.perf_counter())

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return sample, time.perf_counter() - begin


async def open_loop(
    driver: Driver, rate: float, duration_s: float, max_in_flight: int
) -> tuple[Sample, float]:
    sample = Sample()
    total = int(rate * duration_s)
    pending: set[asyncio.Task[None]] = set()
    begin = time.perf_counter() + 0.01
    for i in range(total):
        due = begin + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(pending) >= max_in_flight:
            sample.dropped += 1
            continue
        sample.started += 1
        task = asyncio.create_task(_one(driver, sample, due))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.wait(pending)
    return sample, time.perf_counter() - begin


async def _emulator_invocations(session: aiohttp.ClientSession, url: str, endpoint: str) -> int:
    async with session.get(url + "/_emulator/stats") as response:
        stats = await response.json()
    return int(stats.get(endpoint, {}).get("invocations", 0))


async def _read_line() -> str:
    return await asyncio.to_thread(sys.stdin.readline)


async def hold(driver: Driver, run: Mapping[str, Any], index: int) -> dict[str, Any]:
    """Open `count` calls, report when they are all in flight, cancel them on release."""
    count = int(run["count"])
    sample = Sample()
    reached = 0

    def first() -> None:
        nonlocal reached
        reached += 1

    async def one() -> None:
        try:
            await driver.call(first)
        except Exception as exc:
            sample.fail(exc)

    begin = time.perf_counter()
    tasks = [asyncio.create_task(one()) for _ in range(count)]
    deadline = begin + float(run.get("ready_timeout_s", 30))
    emulator = run.get("emulator_url")
    async with aiohttp.ClientSession() as session:
        while time.perf_counter() < deadline and sample.errors == 0:
            if emulator:  # unary: in flight once the emulator has them all
                reached = await _emulator_invocations(session, emulator, run["endpoint"])
            if reached >= count:
                break
            await asyncio.sleep(0.05)
    ready_s = time.perf_counter() - begin
    _emit({"event": "holding", "run": index, "reached": reached, "ready_s": ready_s})
    try:
        async with asyncio.timeout(float(run.get("hold_s", 60))):
            await _read_line()
    except TimeoutError:
        pass
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "reached": reached,
        "count": count,
        "ready_s": ready_s,
        "errors": sample.errors,
        "error_texts": sample.error_texts,
    }


def _emit(obj: Mapping[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main(job: Mapping[str, Any]) -> None:
    spec = Spec(
        kind=job["kind"],
        target=job["target"],
        model=job["model"],
        body=base64.b64decode(job["body_b64"]),
        expect_bytes=int(job.get("expect_bytes", -1)),
        expect_items=int(job.get("expect_items", -1)),
        item_bytes=int(job.get("item_bytes", 0)),
        metadata=tuple((str(k), str(v)) for k, v in job.get("metadata", [])),
        channels=int(job.get("channels", 1)),
    )
    runs: list[dict[str, Any]] = job["runs"]
    connections = max(int(r.get("concurrency", r.get("count", 1))) for r in runs)
    async with AsyncExitStack() as stack:
        driver = await open_driver(spec, stack, connections)
        for index, run in enumerate(runs):
            mode = run["mode"]
            if mode == "hold":
                _emit({"event": "result", "run": index, **await hold(driver, run, index)})
                continue
            if mode == "closed" and run.get("warmup_s", 0) > 0:
                await closed_loop(driver, run["concurrency"], run["warmup_s"], run["max_calls"])
            _emit({"event": "start", "run": index})
            cpu = time.process_time()
            if mode == "closed":
                sample, elapsed = await closed_loop(
                    driver, run["concurrency"], run["duration_s"], run["max_calls"]
                )
            else:
                sample, elapsed = await open_loop(
                    driver, run["rate"], run["duration_s"], run["max_in_flight"]
                )
            cpu = time.process_time() - cpu
            _emit({"event": "result", "run": index, **sample.summary(elapsed, cpu)})


if __name__ == "__main__":
    try:
        uvloop.run(main(json.loads(sys.stdin.readline())))
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; the runner reports it
        sys.exit(130)
