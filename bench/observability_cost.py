"""What observing one unary call costs, alone: the per-call work of metrics and the JSON access
record, in µs of CPU, measured in one process without the rest of the call around it.

    .venv/bin/python -m bench.observability_cost [--calls 20000] [--rounds 5] [--sink pipe]

It runs exactly what the edge and the AWS wrapper do for one successful Invoke (open the call's
record, name its route, hold and release the route slot, report one InvokeEndpoint, finish:
gRPC series, access record) with each part on or off, in alternating rounds, and prints the
median CPU per call. `python -m bench.ab --observability` measures the same on whole calls
through two sagewire processes; on a busy machine its noise is larger than this difference.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import subprocess
import time
from typing import Any

from sagewire.aws.instrumented import report_upstream
from sagewire.observability import calls, logs, signals
from sagewire.observability.metrics import Metrics


class _Discard(io.TextIOBase):
    """A log stream that keeps nothing (the cost of writing to a pipe is not ours to measure)."""

    def write(self, text: str) -> int:
        return len(text)


class _Quota:
    available_capacity = 500  # botocore's RetryQuota, as read after a call


_QUOTA = _Quota()


def one_call(observer: calls.Observer) -> None:
    call = observer.start("sagewire.v1.InferenceService", "Invoke", "unary")
    call.received, call.bytes_in = 1, 20
    calls.set_model("echo")
    gauge = signals.in_flight()
    if gauge is not None:
        gauge.inc()
    report_upstream("sagemaker-runtime", _QUOTA, "InvokeEndpoint", "OK", 0.001, 0)
    if gauge is not None:
        gauge.dec()
    call.sent, call.bytes_out = 1, 40
    observer.finish(call)


async def cpu_us(observer: calls.Observer, count: int) -> float:
    """On an event loop, as in sagewire: metric updates wait there and go in batches."""
    started = time.process_time()
    for _ in range(count):
        one_call(observer)
    if observer.metrics is not None:
        observer.metrics.apply()
    logs.flush()
    return (time.process_time() - started) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.observability_cost")
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--sink",
        choices=["discard", "pipe"],
        default="discard",
        help="where log lines go: nowhere, or a pipe a separate process drains (as a log "
        "shipper or container runtime reads stderr: the write per line is then counted)",
    )
    parser.add_argument(
        "--unbatched",
        action="store_true",
        help="with --sink pipe: one write per line (what sagewire did before batching)",
    )
    parser.add_argument("--format", choices=["json", "text"], default="json")
    args = parser.parse_args()
    drain = None
    stream: Any = _Discard()
    if args.sink == "pipe":
        drain = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        assert drain.stdin is not None
        # Line-buffered like sys.stderr; lines go out in batches as `sagewire serve` writes
        # them off a terminal (logs.BatchedStreamHandler), unless --unbatched.
        stream = io.TextIOWrapper(drain.stdin, line_buffering=True)
    logs.configure("INFO", args.format, stream, batched=args.sink == "pipe" and not args.unbatched)
    record = f"{args.format.upper() if args.format == 'json' else 'text'} access record"
    variants = {
        "metrics": calls.Observer(Metrics(), access=False),
        record: calls.Observer(None, access=True),
        f"metrics + {record}": calls.Observer(Metrics(), access=True),
    }
    results: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, observer in variants.items():
            results[name].append(asyncio.run(cpu_us(observer, args.calls)))
    for name, values in results.items():
        spread = f"{min(values):.1f}–{max(values):.1f}"
        print(f"{name:34} {statistics.median(values):6.1f} µs/call ({spread})")
    if drain is not None:
        logs.flush()
        stream.close()
        drain.wait()


if __name__ == "__main__":
    main()
