"""Overload: a route offered 4× its endpoint's capacity, the static cap against the adaptive
limit, in one run against one sagewire process (issue 14).

    .venv/bin/python -m bench.overload [--seconds 8] [--rounds 2] [--factor 4]

The endpoint is a model container with a fixed capacity: `--workers` calls served at once, each
taking `--service-ms`; more wait in the container's queue, as a real container with N workers
does. It runs with the emulator (which fronts it, `container_url`) in a helper process; sagewire
runs as its own process (`sagewire serve`) with three routes on that one endpoint (both started
and stopped by bench.services):

- `static`: today's fail-fast cap, `max_concurrency = 64`, `admission.max_wait_ms = 0`;
- `adaptive`: `max_concurrency = 64`, `admission.adaptive = true`, other admission defaults;
- `adaptive-tight`: the same with `admission.tolerance = 0.25` (the default is 0.5).

First each route is measured unloaded (`--workers` / 2 callers, one call after another), then
under overload: calls arrive open-loop at `--factor` × capacity (capacity = workers /
service time) for `--seconds`, the routes taking turns (in a rotating order) for `--rounds`
rounds after a warm-up, so drift spreads over all of them. For admitted calls (answered OK) it
reports p50/p99 latency and goodput (OK answers per second within the phase) against capacity,
and the route's limit as `sagewire_route_concurrency_limit` showed it (scraped every 0.2 s);
shed calls (UNAVAILABLE) are counted, not retried. Target: p99 of admitted calls ≤ 2× the
unloaded p99, goodput ≥ 90 % of capacity. Results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import grpc
from aiohttp import web

from bench.services import Services
from bench.sse_first_byte import _pct
from sagewire.emulator.config import EmulatorConfig, EndpointConfig
from sagewire.emulator.server import running_emulator
from sagewire.v1 import inference_service_pb2_grpc, invoke_pb2

CONFIG = """
[server]
listen = "127.0.0.1:0"
log_level = "WARNING"

[telemetry]
metrics_listen = "127.0.0.1:0"

[aws]
runtime_endpoint_url = "{url}"
control_endpoint_url = "{url}"
endpoint_status_ttl_s = 0
max_attempts = 1

[routes.static]
endpoint = "capacity"
max_concurrency = 64
timeout_s = 30
admission = {{ max_wait_ms = 0 }}

[routes.adaptive]
endpoint = "capacity"
max_concurrency = 64
timeout_s = 30
admission = {{ adaptive = true }}

[routes.adaptive-tight]
endpoint = "capacity"
max_concurrency = 64
timeout_s = 30
admission = {{ adaptive = true, tolerance = 0.25 }}
"""
ROUTES = ("static", "adaptive", "adaptive-tight")


# -- the upstream: a fixed-capacity model container behind the emulator (helper process) --------


async def _serve_upstream(workers: int, service_ms: float) -> None:
    """Serve the container and the emulator; print the emulator's URL; run until SIGTERM."""
    workers_free = asyncio.Semaphore(workers)

    async def invocations(request: web.Request) -> web.Response:
        body = await request.read()
        async with workers_free:
            await asyncio.sleep(service_ms / 1000)
        return web.Response(body=body, content_type="application/json")

    async def ping(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/invocations", invocations)
    app.router.add_get("/ping", ping)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    config = EmulatorConfig(
        endpoints={"capacity": EndpointConfig(container_url=f"http://127.0.0.1:{port}")}
    )
    stopped = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopped.set)
    try:
        async with running_emulator(config) as emulator:
            print(f"overload upstream on {emulator.url}", flush=True)
            await stopped.wait()
    finally:
        await runner.cleanup()


UPSTREAM_READY = re.compile(r"overload upstream on (http://\S+)")
METRICS = re.compile(r"metrics on (http://\S+)")


async def limits(url: str, route: str, until: asyncio.Event) -> list[float]:
    """`sagewire_route_concurrency_limit` of `route`, scraped every 0.2 s until `until`."""
    line = re.compile(rf'^sagewire_route_concurrency_limit{{model="{route}"}} (\S+)$', re.M)
    seen: list[float] = []
    async with aiohttp.ClientSession() as http:
        while not until.is_set():
            async with http.get(url) as response:
                if match := line.search(await response.text()):
                    seen.append(float(match.group(1)))
            with suppress(TimeoutError):
                await asyncio.wait_for(until.wait(), 0.2)
    return seen


# -- load -----------------------------------------------------------------------------------------


@dataclass
class Phase:
    """One phase's outcomes; goodput counts OK answers that arrived within the phase."""

    route: str
    seconds: float
    started: float = field(default_factory=time.monotonic)
    ok_ms: list[float] = field(default_factory=list)
    ok_within: int = 0
    shed: int = 0
    other: dict[str, int] = field(default_factory=dict)


async def _one(stub: Stub, phase: Phase) -> None:
    started = time.perf_counter()
    try:
        await stub.Invoke(invoke_pb2.InvokeRequest(model=phase.route, body=b"{}"), timeout=30)
    except grpc.aio.AioRpcError as error:
        if error.code() is grpc.StatusCode.UNAVAILABLE:
            phase.shed += 1
        else:
            name = error.code().name
            phase.other[name] = phase.other.get(name, 0) + 1
        return
    phase.ok_ms.append((time.perf_counter() - started) * 1000)
    if time.monotonic() <= phase.started + phase.seconds:
        phase.ok_within += 1


type Stub = inference_service_pb2_grpc.InferenceServiceAsyncStub


async def unloaded(stub: Stub, route: str, callers: int, seconds: float) -> Phase:
    """`callers` callers, each one call after another, for `seconds`."""
    phase = Phase(route, seconds)
    ends = time.monotonic() + seconds

    async def caller() -> None:
        while time.monotonic() < ends:
            await _one(stub, phase)

    await asyncio.gather(*(caller() for _ in range(callers)))
    return phase


async def overload(stub: Stub, route: str, rate: float, seconds: float) -> Phase:
    """Calls arrive open-loop at `rate` per second for `seconds`; waits for all of them."""
    phase = Phase(route, seconds)
    tasks: list[asyncio.Task[None]] = []
    started = phase.started
    sent = 0
    while (now := time.monotonic()) < started + seconds:
        due = int((now - started) * rate) + 1
        for _ in range(due - sent):
            tasks.append(asyncio.create_task(_one(stub, phase)))
        sent = due
        await asyncio.sleep(0.002)
    await asyncio.gather(*tasks)
    return phase


@asynccontextmanager
async def channel(target: str) -> AsyncIterator[Stub]:
    async with grpc.aio.insecure_channel(target) as ch:
        yield inference_service_pb2_grpc.InferenceServiceStub(ch)


async def run(target: str, metrics: str, args: argparse.Namespace) -> dict[str, object]:
    capacity = args.workers / (args.service_ms / 1000)
    rate = args.factor * capacity
    results: dict[str, object] = {"capacity_rps": capacity, "offered_rps": rate}
    async with channel(target) as stub:
        for route in ROUTES:  # warm connections, and the adaptive limiter's first probe
            await unloaded(stub, route, max(1, args.workers // 2), 1.0)
        base = {
            r: await unloaded(stub, r, max(1, args.workers // 2), args.unloaded) for r in ROUTES
        }
        for route in ROUTES:  # warm-up under overload (the adaptive limit settles)
            await overload(stub, route, rate, 2.0)
        loaded: dict[str, list[Phase]] = {r: [] for r in ROUTES}
        seen: dict[str, list[float]] = {r: [] for r in ROUTES}
        for n in range(args.rounds):
            for route in ROUTES[n % len(ROUTES) :] + ROUTES[: n % len(ROUTES)]:
                done = asyncio.Event()
                sampler = asyncio.create_task(limits(metrics, route, done))
                loaded[route].append(await overload(stub, route, rate, args.seconds))
                done.set()
                seen[route] += await sampler
    for route in ROUTES:
        ok = [ms for phase in loaded[route] for ms in phase.ok_ms]
        within = sum(phase.ok_within for phase in loaded[route])
        seconds = sum(phase.seconds for phase in loaded[route])
        unloaded_p99 = _pct(base[route].ok_ms, 0.99)
        p99 = _pct(ok, 0.99) if ok else float("nan")
        results[route] = {
            "unloaded_p50_ms": _pct(base[route].ok_ms, 0.5),
            "unloaded_p99_ms": unloaded_p99,
            "admitted_p50_ms": _pct(ok, 0.5) if ok else float("nan"),
            "admitted_p99_ms": p99,
            "p99_ratio": p99 / unloaded_p99,
            "goodput_rps": within / seconds,
            "goodput_of_capacity": within / seconds / capacity,
            "shed": sum(phase.shed for phase in loaded[route]),
            "limit_min_median_max": (
                [min(seen[route]), _pct(seen[route], 0.5), max(seen[route])] if seen[route] else []
            ),
            "other_failures": {
                k: sum(p.other.get(k, 0) for p in loaded[route])
                for k in {k for p in loaded[route] for k in p.other}
            },
        }
    return results


def report(results: dict[str, object], load: tuple[tuple[float, ...], tuple[float, ...]]) -> str:
    lines = [
        f"capacity {results['capacity_rps']:.0f} calls/s, offered {results['offered_rps']:.0f} "
        f"calls/s; load average before {load[0][0]:.1f}, after {load[1][0]:.1f} "
        f"({os.cpu_count()} CPUs)",
        "",
        "| route | unloaded p99 | admitted p50 | admitted p99 | p99 / unloaded p99 | goodput "
        "| of capacity | shed | limit (min / median / max) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for route in ROUTES:
        r = results[route]
        assert isinstance(r, dict)
        lines.append(
            f"| {route} | {r['unloaded_p99_ms']:.0f} ms | {r['admitted_p50_ms']:.0f} ms "
            f"| {r['admitted_p99_ms']:.0f} ms | {r['p99_ratio']:.2f}× "
            f"| {r['goodput_rps']:.1f}/s | {r['goodput_of_capacity']:.0%} | {r['shed']} "
            f"| {' / '.join(f'{x:.0f}' for x in r['limit_min_median_max'])} |"
        )
        if r["other_failures"]:
            lines.append(f"  other failures on {route}: {r['other_failures']}")
    return "\n".join(lines)


async def _measure(args: argparse.Namespace) -> dict[str, object]:
    async with Services() as services:
        helper = [sys.executable, "-m", "bench.overload", "--upstream"]
        capacity = [str(args.workers), str(args.service_ms)]
        upstream = await services.helper("upstream", [*helper, *capacity], UPSTREAM_READY)
        with tempfile.TemporaryDirectory() as directory:
            config = Path(directory) / "sagewire.toml"
            config.write_text(CONFIG.format(url=upstream.address))
            gateway = await services.sagewire(config, upstream.address)
            found = [m.group(1) for line in gateway.log if (m := METRICS.search(line))]
            if not found:
                raise RuntimeError("sagewire started without its metrics listener")
            return await run(gateway.address, found[0], args)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.overload", description=__doc__)
    parser.add_argument("--workers", type=int, default=8, help="container capacity (calls)")
    parser.add_argument("--service-ms", type=float, default=200.0, help="time per call")
    parser.add_argument("--factor", type=float, default=4.0, help="offered load / capacity")
    parser.add_argument("--seconds", type=float, default=8.0, help="per overload phase")
    parser.add_argument("--unloaded", type=float, default=4.0, help="unloaded phase, seconds")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    parser.add_argument("--upstream", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.upstream:
        with suppress(KeyboardInterrupt):  # Ctrl-C reaches the helper too; the bench reports
            asyncio.run(_serve_upstream(int(args.upstream[0]), float(args.upstream[1])))
        return
    before = os.getloadavg()
    results = asyncio.run(_measure(args))
    after = os.getloadavg()
    print(report(results, (before, after)))
    if args.json:
        print(json.dumps({**results, "load_before": before, "load_after": after}, indent=2))


if __name__ == "__main__":
    main()
