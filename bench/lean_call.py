"""Is a change to the lean InvokeEndpoint path faster? CPU per call in one process, two trees
measured in alternation (issue 15).

    python -m bench.lean_call --baseline DIR [--pairs 12] [--calls 8000]

Why this next to `bench.ab` and `bench.grpc_floor`: those measure whole processes behind grpc.aio,
where a change of a few µs per call (0.5 % of the server's CPU per call, 1 % of a p50) is far
inside their round-to-round spread on a shared machine; an A-vs-A run of `bench.grpc_floor`
(the same code on both sides) gave +0.073 ms. Here each run is a fresh process calling
`SageMakerRuntime.invoke_endpoint` (aws.client = "lean": parameters, request, SigV4, the HTTP/1.1
pool, the answer's parsing, the CLIENT observation) `--calls` times, 1 KB JSON, concurrency 1,
under uvloop, against a canned HTTP/1.1 answer served by the same process; its process CPU time
per call is printed. A runs the `sagewire` package in DIR (first on PYTHONPATH), B this working
tree, in alternating order, with PYTHONHASHSEED=0 on both (a per-process hash seed moves dict
layouts and with them the figure). Printed: each pair, and the median paired difference B − A
in µs and ratio B/A; with the load average before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import cast

from bench.lean_stages import ENV
from bench.services import REPO

BODY = b'{"inputs": "' + b"x" * 1010 + b'"}'
ANSWER = (
    b"HTTP/1.1 200 OK\r\n"
    b"x-Amzn-Invoked-Production-Variant: AllTraffic\r\n"
    b"x-amzn-RequestId: 0c0a7a4e-1b9a-4c7e-9d55-6b1c2f0d8a11\r\n"
    b"Date: Tue, 01 Dec 2026 04:00:00 GMT\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
)
WARMUP_CALLS = 500


class _Canned(asyncio.Protocol):
    """Answers each whole request (headers, then Content-Length bytes) with ANSWER."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but are one in behaviour.
        self._transport = cast(asyncio.Transport, transport)
        self._buffer = b""

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (end := self._buffer.find(b"\r\n\r\n")) >= 0:
            length = 0
            for line in self._buffer[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self._buffer) < end + 4 + length:
                return
            self._buffer = self._buffer[end + 4 + length :]
            self._transport.write(ANSWER)


async def _one_run(calls: int) -> float:
    """µs of process CPU per InvokeEndpoint, after WARMUP_CALLS."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Canned, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    os.environ.update(ENV, AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=f"http://127.0.0.1:{port}")
    from sagewire.aws.runtime import SageMakerRuntime
    from sagewire.config.settings import AwsSettings
    from sagewire.core.types import EndpointRequest, InvocationOptions

    request = EndpointRequest(
        "echo", BODY, "application/json", "application/json", InvocationOptions()
    )
    try:
        async with SageMakerRuntime(AwsSettings(client="lean")) as runtime:
            for _ in range(WARMUP_CALLS):
                await runtime.invoke_endpoint(request)
            start = time.process_time()
            for _ in range(calls):
                result = await runtime.invoke_endpoint(request)
            per_call = (time.process_time() - start) / calls * 1e6
    finally:
        server.close()
    if result.body != BODY:
        raise RuntimeError("the canned answer came back changed")
    return per_call


def _child(calls: int) -> None:
    import uvloop

    print(f"{uvloop.run(_one_run(calls)):.3f}")


def _run(tree: Path | None, calls: int) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SAGEWIRE_"))}
    env["PYTHONHASHSEED"] = "0"
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    else:
        env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [sys.executable, "-m", "bench.lean_call", "--child", str(calls)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench.lean_call --child failed:\n{done.stderr[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.lean_call", description=__doc__)
    parser.add_argument("--baseline", type=Path, help="a directory holding another sagewire/")
    parser.add_argument("--pairs", type=int, default=12)
    parser.add_argument("--calls", type=int, default=8000)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        _child(args.child)
        return
    if args.baseline is None or not (args.baseline / "sagewire").is_dir():
        parser.error("--baseline must name a directory holding sagewire/")
    baseline = args.baseline.resolve()
    print(f"A = {baseline}, B = this working tree; load average {_load()}", flush=True)
    pairs: list[tuple[float, float]] = []
    for turn in range(args.pairs):
        if turn % 2 == 0:
            a = _run(baseline, args.calls)
            b = _run(None, args.calls)
        else:
            b = _run(None, args.calls)
            a = _run(baseline, args.calls)
        pairs.append((a, b))
        print(f"  A {a:7.2f}  B {b:7.2f} µs per call  B − A {b - a:+6.2f} µs", flush=True)
    diffs = sorted(b - a for a, b in pairs)
    ratios = sorted(b / a for a, b in pairs)
    med = statistics.median
    print(
        f"CPU per lean InvokeEndpoint: A {med(a for a, _ in pairs):.2f} µs, "
        f"B {med(b for _, b in pairs):.2f} µs; paired B − A {med(diffs):+.2f} µs "
        f"({diffs[0]:+.2f}…{diffs[-1]:+.2f}), B/A {med(ratios):.3f}×; load average {_load()}"
    )


if __name__ == "__main__":
    main()
