"""First message of a stream: the REST bridge's SSE (and NDJSON) against gRPC InvokeStream, in
one run against one sagewire process.

    .venv/bin/python -m bench.sse_first_byte [--calls 300] [--words 3]

The emulator runs on its own event loop in a thread; sagewire runs as its own process
(`sagewire serve`, uvloop, gRPC and REST listeners, one `tokens` stream route with `lines`
framing). The client sends one call at a time on a kept-alive connection (grpc.aio channel,
aiohttp session) and measures from sending the request to having the first message parsed:
for gRPC the first InvokeStreamResponse, for SSE the first `data:` event, for NDJSON the first
line. Variants rotate call by call so drift spreads over all three. Target (issue 11): SSE
first-message overhead over InvokeStream ≤ 1 ms at p50. Results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import grpc

from bench.bidi_roundtrip import EmulatorThread
from sagewire.v1 import inference_service_pb2_grpc, invoke_pb2

CONFIG = """
[server]
listen = "127.0.0.1:0"
log_level = "WARNING"

[rest]
listen = "127.0.0.1:0"

[aws]
runtime_endpoint_url = "{url}"
control_endpoint_url = "{url}"
endpoint_status_ttl_s = 0

[routes.tokens]
endpoint = "tokens"
mode = "stream"
framing = "lines"
timeout_s = 60
"""
READY = re.compile(r"sagewire ready on (\S+)")
REST = re.compile(r"sagewire REST bridge on (\S+)")


@contextmanager
def sagewire(config: Path) -> Iterator[tuple[str, str]]:
    """`sagewire serve` on free ports; yields (gRPC target, REST base URL)."""
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
    popen = subprocess.Popen(
        [str(Path(sys.executable).parent / "sagewire"), "serve", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    ready, found = threading.Event(), {}

    def drain() -> None:
        assert popen.stderr is not None
        for line in popen.stderr:
            if match := REST.search(line):
                found["rest"] = match.group(1)
            if (match := READY.search(line)) and not ready.is_set():
                found["grpc"] = match.group(1)
                ready.set()

    threading.Thread(target=drain, daemon=True).start()
    try:
        if not ready.wait(60) or "rest" not in found:
            raise RuntimeError("sagewire did not start with its REST listener")
        yield found["grpc"], found["rest"]
    finally:
        popen.terminate()
        try:
            popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(target: str, rest: str, calls: int, text: str) -> dict[str, list[float]]:
    body = json.dumps({"text": text}).encode()
    request = invoke_pb2.InvokeStreamRequest(model="tokens", body=body)
    http_body = json.dumps({"json": {"text": text}}).encode()
    url = f"{rest}/v1/models/tokens:invokeStream"
    async with (
        grpc.aio.insecure_channel(target) as channel,
        aiohttp.ClientSession() as session,
    ):
        stub = inference_service_pb2_grpc.InferenceServiceStub(channel)

        async def grpc_first() -> float:
            started = time.perf_counter()
            call = stub.InvokeStream(request, timeout=30)
            first = await call.read()
            elapsed = time.perf_counter() - started
            assert isinstance(first, invoke_pb2.InvokeStreamResponse), first
            while await call.read() is not grpc.aio.EOF:  # type: ignore[attr-defined]
                pass
            return elapsed

        async def http_first(accept: str, prefix: bytes) -> float:
            started = time.perf_counter()
            headers = {"Accept": accept} if accept else {}
            async with session.post(url, data=http_body, headers=headers) as response:
                async for line in response.content:
                    if line.startswith(prefix):
                        elapsed = time.perf_counter() - started
                        json.loads(line.removeprefix(b"data: "))
                        break
                else:
                    raise RuntimeError("no message")
                await response.read()
            return elapsed

        variants: dict[str, Callable[[], Awaitable[float]]] = {
            "gRPC InvokeStream": grpc_first,
            "REST SSE": lambda: http_first("text/event-stream", b"data: "),
            "REST NDJSON": lambda: http_first("", b"{"),
        }
        results: dict[str, list[float]] = {name: [] for name in variants}
        names = list(variants)
        for _ in range(20):  # warm-up: connections, caches
            for name in names:
                await variants[name]()
        for i in range(calls):
            for name in names[i % 3 :] + names[: i % 3]:
                results[name].append((await variants[name]()) * 1000)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300, help="calls per variant")
    parser.add_argument("--words", type=int, default=3, help="words the model streams back")
    args = parser.parse_args()
    text = " ".join(f"w{i}" for i in range(args.words))
    with EmulatorThread() as emulator, tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "sagewire.toml"
        config.write_text(CONFIG.format(url=emulator.url), encoding="utf-8")
        with sagewire(config) as (target, rest):
            results = asyncio.run(measure(target, rest, args.calls, text))
    base = _pct(results["gRPC InvokeStream"], 0.5)
    print(
        f"{args.calls} calls per variant, one at a time, rotating; first message of a "
        f"{args.words}-word `tokens` stream ({os.cpu_count()} CPUs, loopback)\n"
    )
    print("| variant | first message p50 | p90 | p99 | mean | p50 over gRPC |")
    print("|---|---|---|---|---|---|")
    for name, values in results.items():
        print(
            f"| {name} | {_pct(values, 0.5):.2f} ms | {_pct(values, 0.9):.2f} ms "
            f"| {_pct(values, 0.99):.2f} ms | {statistics.fmean(values):.2f} ms "
            f"| {_pct(values, 0.5) - base:+.2f} ms |"
        )


if __name__ == "__main__":
    main()
