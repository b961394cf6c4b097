"""The REST bridge against the FastAPI reference, paired: issue 11's target on a busy machine.

    python -m bench.rest_ratio [--rounds 6] [--seconds 2] [--concurrency 64]

One emulator, one sagewire (REST bridge on) and the FastAPI reference (bench.contenders), all
started once. Every round runs unary 1 KB at the given concurrency through sagewire's
`POST /v1/models/echo:invoke`, its raw passthrough `POST /v1/models/echo/invocations` and the
reference's `POST /v1/models/echo:invoke`, in an order rotated each round, so a busy neighbour
hits all three alike. It prints the medians and the per-round ratios of throughput (the target:
≥ 1.3× the reference at @64) and of server CPU per call (which background load disturbs less),
with the machine's load average before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
from pathlib import Path

from bench.configs import write_configs
from bench.payloads import json_payload
from bench.run import log, make_job, run_loadgen
from bench.services import Service, Services

PAYLOAD = 1024
# contender → (driver kind, path, which process serves it)
CONTENDERS = {
    "rest :invoke": ("rest", "/v1/models/echo:invoke", "sagewire"),
    "rest /invocations": ("http", "/v1/models/echo/invocations", "sagewire"),
    "fastapi": ("http", "/v1/models/echo:invoke", "fastapi"),
}


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


async def compare(rounds: int, seconds: float, concurrency: int) -> None:
    rate: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    cpu: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    errors = dict.fromkeys(CONTENDERS, 0)
    body = json_payload(PAYLOAD)
    run = {
        "mode": "closed",
        "concurrency": concurrency,
        "warmup_s": 0.5,
        "duration_s": seconds,
        "max_calls": 1_000_000,
    }
    with tempfile.TemporaryDirectory(prefix="sagewire-rest-ratio-") as directory:
        emulator_config, sagewire_config = write_configs(Path(directory))
        async with Services() as services:
            emulator = await services.emulator(emulator_config)
            servers: dict[str, Service] = {
                "sagewire": await services.sagewire(sagewire_config, emulator.address),
                "fastapi": await services.fastapi(emulator.address),
            }
            address = {"sagewire": servers["sagewire"].rest_address}
            address["fastapi"] = servers["fastapi"].address
            log(f"load average before: {_load()}")
            names = list(CONTENDERS)
            for turn in range(rounds):
                for name in names[turn % 3 :] + names[: turn % 3]:
                    kind, path, server = CONTENDERS[name]
                    job = make_job(kind, address[server], path, body, [run], expect_bytes=len(body))
                    watch = {"server": servers[server]}
                    for result in await run_loadgen(
                        job, watch, seconds + 20, ours=services.running
                    ):
                        rate[name].append(result["calls_per_s"])
                        cpu[name].append(result["server_cpu_s"] / max(result["calls"], 1) * 1e6)
                        errors[name] += result["errors"]
            log(f"load average after: {_load()}")
    med = statistics.median
    print(f"\nunary {PAYLOAD} B @{concurrency}, medians over {rounds} rounds")
    for name in CONTENDERS:
        print(
            f"  {name:18} {med(rate[name]):8.0f} calls/s  server CPU {med(cpu[name]):7.0f} µs/call"
            f"  errors {errors[name]}"
        )
    for name in ("rest :invoke", "rest /invocations"):
        ratios = [a / b for a, b in zip(rate[name], rate["fastapi"], strict=True)]
        cpu_ratios = [a / b for a, b in zip(cpu[name], cpu["fastapi"], strict=True)]
        print(
            f"  {name} / fastapi: throughput {med(ratios):.2f}× "
            f"({min(ratios):.2f}–{max(ratios):.2f}), CPU per call {med(cpu_ratios):.2f}×"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.rest_ratio", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    asyncio.run(compare(args.rounds, args.seconds, args.concurrency))


if __name__ == "__main__":
    main()
