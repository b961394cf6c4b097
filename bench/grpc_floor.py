"""How much of sagewire's added unary latency at concurrency 1 is sagewire's, and how much any
Python grpc.aio gateway pays (issue 15's "added latency p50 over direct aioboto3" target).

    python -m bench.grpc_floor [--rounds 6] [--seconds 2] [--baseline DIR]

Four contenders, the same 1 KB JSON body and emulator, measured in turns (each round runs them
in a rotated order, so a busy neighbour hits all alike): direct aioboto3 (the target's
reference), the bare grpc.aio echo server (no upstream), the same echo server forwarding each
Invoke to the emulator on sagewire's own HTTP/1.1 pool, unsigned (`grpc_echo --upstream`: the
floor, a gateway doing nothing but the hop), and sagewire. Printed: each one's p50 and the
paired differences per round: sagewire − direct (the target's measure), floor − direct (what
grpc.aio and one HTTP/1.1 exchange cost whatever the gateway does), sagewire − floor
(sagewire's own share).
`--baseline DIR` adds a fifth, the `sagewire` package in DIR (as `bench.ab --baseline`), and
the paired difference sagewire − baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench.configs import write_configs
from bench.payloads import json_payload
from bench.run import log, make_job, run_loadgen
from bench.services import Service, Services

CONTENDERS = ("direct", "echo", "floor", "sagewire")


def _job(kind: str, target: str, seconds: float) -> dict[str, Any]:
    body = json_payload(1024)
    run = {
        "mode": "closed",
        "concurrency": 1,
        "warmup_s": 0.3,
        "duration_s": seconds,
        "max_calls": 1_000_000,
    }
    return make_job(kind, target, "echo", body, [run], expect_bytes=len(body))


async def measure(
    rounds: int, seconds: float, baseline: Path | None = None
) -> dict[str, list[float]]:
    names = (*CONTENDERS, "baseline") if baseline is not None else CONTENDERS
    p50: dict[str, list[float]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="sagewire-floor-") as directory:
        emulator_config, sagewire_config = write_configs(Path(directory))
        async with Services() as services:
            emulator = await services.emulator(emulator_config)
            servers: dict[str, Service] = {
                "echo": await services.grpc_echo(),
                "floor": await services.grpc_echo(upstream=emulator.address),
                "sagewire": await services.sagewire(sagewire_config, emulator.address),
            }
            if baseline is not None:
                servers["baseline"] = await services.sagewire(
                    sagewire_config,
                    emulator.address,
                    extra_env={"PYTHONPATH": str(baseline)},
                    name="baseline",
                )
            for turn in range(rounds):
                shift = turn % len(names)
                order = names[shift:] + names[:shift]
                for name in order:
                    if name == "direct":
                        job, watch = _job("boto", emulator.address, seconds), {}
                    else:
                        server = servers[name]
                        job, watch = _job("grpc", server.address, seconds), {"server": server}
                    for result in await run_loadgen(
                        job, watch, seconds + 20, ours=services.running
                    ):
                        if result["errors"]:
                            raise RuntimeError(f"{name}: {result['errors']} failed calls")
                        p50[name].append(result["p50_ms"])
                log(f"round {turn + 1}/{rounds}")
    return p50


def report(p50: dict[str, list[float]]) -> None:
    med = statistics.median
    print("\nunary Invoke, 1 KB JSON, concurrency 1: p50 per round, medians over rounds")
    for name, values in p50.items():
        print(f"  {name:9s} {med(values):6.3f} ms  ({min(values):.3f}–{max(values):.3f})")

    def paired(a: str, b: str) -> str:
        diffs = sorted(x - y for x, y in zip(p50[a], p50[b], strict=True))
        return f"{med(diffs):+.3f} ms ({diffs[0]:+.3f}…{diffs[-1]:+.3f})"

    print(f"  sagewire − direct: {paired('sagewire', 'direct')}  (issue 15 target: ≤ 0.3 ms)")
    print(f"  floor − direct:    {paired('floor', 'direct')}  (grpc.aio + one HTTP/1.1 exchange)")
    print(f"  sagewire − floor:  {paired('sagewire', 'floor')}  (sagewire's own share)")
    if "baseline" in p50:
        print(f"  sagewire − baseline: {paired('sagewire', 'baseline')}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.grpc_floor", description=__doc__)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--baseline", type=Path, help="a directory holding another sagewire/")
    args = parser.parse_args()
    if args.baseline is not None and not (args.baseline / "sagewire").is_dir():
        parser.error("--baseline must name a directory holding sagewire/")
    baseline = args.baseline.resolve() if args.baseline is not None else None
    report(asyncio.run(measure(args.rounds, args.seconds, baseline)))


if __name__ == "__main__":
    main()
