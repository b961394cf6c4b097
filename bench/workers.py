"""What `sagewire serve --workers 2` buys over one process on CPU-bound unary calls.

    .venv/bin/python -m bench.workers [--rounds 3] [--duration 3] [--out docs/benchmarks.md]

Method (docs/benchmarks.md, "Workers"). On a 2-core machine the load generator and the
emulator need CPU too, so two workers never get two cores of their own and a throughput ratio
measured as is says more about the machine than about sagewire. So this measures sagewire's
CPU per call: the user + system CPU of the whole process tree (parent and workers, psutil)
over a closed-loop run (1 KB JSON `Invoke`, concurrency 64, rotating over 16 gRPC connections
so the kernel spreads them over the workers), for 1 worker (plain `serve`) and for 2, the two
alternating within each round. Then

    capacity(N) = N × u / c(N)        (u: the cores one worker can use, c: CPU per call)

for N workers, each with a core of its own and the clients and SageMaker elsewhere, so

    2 workers ÷ 1 worker = 2 × c(1) ÷ c(2)

where u cancels as long as a worker's ceiling is the same alone and beside another (one event
loop each). Whatever a second worker costs per call (the multiprocess metrics files, cache and
scheduler contention on this machine) shows up in c(2). Where the single worker runs nearer
its ceiling than each of two does, c(1) gains from batching (more calls per event-loop turn)
that c(2) lacks: the extrapolation then errs low, not high. The directly measured throughput
ratio on this machine is printed beside it, labelled as what it is.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench import machine
from bench.configs import write_configs
from bench.payloads import json_payload
from bench.run import log, make_job, run_loadgen
from bench.services import REPO, Service, ServiceDied, Services

BEGIN = "<!-- bench:workers:begin (written by `python -m bench.workers`) -->"
END = "<!-- bench:workers:end -->"
CONCURRENCY = 64
CHANNELS = 16
TARGET = 1.6


class Tree(Service):
    """A service whose CPU is that of its whole process tree (the parent and its workers)."""

    def cpu_s(self) -> float:
        try:
            root = psutil.Process(self.process.pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            raise ServiceDied(self) from None
        total = 0.0
        for process in processes:
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total


@dataclass
class Round:
    calls_per_s: dict[int, float] = field(default_factory=dict)
    cpu_ms: dict[int, float] = field(default_factory=dict)  # sagewire CPU per call
    cores: dict[int, float] = field(default_factory=dict)  # sagewire CPU ÷ wall time
    other_ms: dict[int, float] = field(default_factory=dict)  # clients + emulator per call
    foreign_cores: dict[int, float] = field(default_factory=dict)  # everything else
    errors: int = 0


async def one_run(
    services: Services, config: Path, emulator: Service, workers: int, duration: float
) -> dict[str, float]:
    args = ("--workers", str(workers)) if workers > 1 else ()
    started = await services.sagewire(config, emulator.address, serve_args=args)
    tree = Tree(started.name, started.process, started.address)
    try:
        await asyncio.sleep(1.0)  # start-up settles (the workers' imports, first connections)
        body = json_payload(1024)
        run = {
            "mode": "closed",
            "concurrency": CONCURRENCY,
            "warmup_s": 1.0,
            "duration_s": duration,
            "max_calls": 1_000_000,
        }
        job = make_job(
            "grpc", tree.address, "echo", body, [run], expect_bytes=len(body), channels=CHANNELS
        )
        watch = {"server": tree, "emulator": emulator}
        results = await run_loadgen(job, watch, duration + 10, ours=[tree, emulator])
    finally:
        await services.retire(started)
    if not results:
        raise RuntimeError(f"the load generator reported nothing for {workers} worker(s)")
    result = results[0]
    calls = max(1, int(result["calls"]))
    return {
        "calls_per_s": float(result["calls_per_s"]),
        "cpu_ms": result["server_cpu_s"] / calls * 1e3,
        "cores": result["server_cpu_s"] / result["elapsed_s"],
        "other_ms": (result["client_cpu_s"] + result["emulator_cpu_s"]) / calls * 1e3,
        "foreign_cores": result["foreign_cpu_s"] / result["elapsed_s"],
        "errors": float(result["errors"]),
    }


async def measure(rounds: int, duration: float) -> list[Round]:
    found: list[Round] = []
    async with Services() as services:
        with tempfile.TemporaryDirectory(prefix="sagewire-bench-workers-") as directory:
            emulator_config, sagewire_config = write_configs(Path(directory))
            emulator = await services.emulator(emulator_config)
            for index in range(rounds):
                measured = Round()
                order = (1, 2) if index % 2 == 0 else (2, 1)  # paired, alternating
                for workers in order:
                    log(f"round {index + 1}/{rounds}: {workers} worker(s)")
                    got = await one_run(services, sagewire_config, emulator, workers, duration)
                    measured.calls_per_s[workers] = got["calls_per_s"]
                    measured.cpu_ms[workers] = got["cpu_ms"]
                    measured.cores[workers] = got["cores"]
                    measured.other_ms[workers] = got["other_ms"]
                    measured.foreign_cores[workers] = got["foreign_cores"]
                    measured.errors += int(got["errors"])
                found.append(measured)
    return found


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _span(values: list[float], digits: int = 2, suffix: str = "") -> str:
    middle = f"{_median(values):.{digits}f}{suffix}"
    if len(values) < 2:
        return middle
    return f"{middle} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def render(rounds: list[Round], load: tuple[float, float], duration: float) -> str:
    extrapolated = [2 * r.cpu_ms[1] / r.cpu_ms[2] for r in rounds]
    direct = [r.calls_per_s[2] / r.calls_per_s[1] for r in rounds]
    rows = []
    for workers in (1, 2):
        rows.append(
            f"| {workers} | {_span([r.calls_per_s[workers] for r in rounds], 0)} | "
            f"{_span([r.cpu_ms[workers] for r in rounds], 3)} | "
            f"{_span([r.cores[workers] for r in rounds], 2)} | "
            f"{_span([r.other_ms[workers] for r in rounds], 3)} | "
            f"{_span([r.foreign_cores[workers] for r in rounds], 2)} |"
        )
    met = _median(extrapolated) >= TARGET
    facts = machine.describe()
    lines = [
        "#### Workers: 2 ÷ 1 on CPU-bound unary calls",
        "",
        f"{len(rounds)} rounds of {duration:g} s per variant (1 s warm-up), 1 KB JSON `Invoke` at "
        f"concurrency {CONCURRENCY} over {CHANNELS} gRPC connections, 1 and 2 workers "
        f"alternating; {facts['CPU']}; load average {load[0]:.2f} before, {load[1]:.2f} after. "
        "Medians, (min–max) over rounds.",
        "",
        "| workers | calls/s here | sagewire CPU per call (ms) | sagewire cores used | "
        "load generator + emulator CPU per call (ms) | other processes (cores) |",
        "|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "| measure | value | target |",
        "|---|---:|---:|",
        f"| 2 workers ÷ 1 worker, CPU-bound unary (2 × CPU per call with 1 ÷ with 2, each worker "
        f"on a core of its own) | {_span(extrapolated)}× | ≥ {TARGET}× "
        f"({'met' if met else 'not met'}) |",
        f"| throughput with 2 ÷ with 1, measured on this machine as is (clients, emulator and "
        f"workers sharing its cores) | {_span(direct)}× | — |",
    ]
    errors = sum(r.errors for r in rounds)
    if errors:
        lines += ["", f"{errors} calls failed in these runs."]
    return "\n".join(lines)


def write(out: Path, text: str) -> None:
    """Replace the block between BEGIN and END in `out` (appended when there is none)."""
    existing = out.read_text(encoding="utf-8")
    block = f"{BEGIN}\n{text.strip()}\n{END}"
    start, end = existing.find(BEGIN), existing.find(END)
    if start < 0 or end < start:
        updated = existing.rstrip("\n") + "\n\n" + block + "\n"
    else:
        updated = existing[:start] + block + existing[end + len(END) :]
    out.write_text(updated, encoding="utf-8")
    log(f"wrote {out}")


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per run")
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s")
    parser.add_argument("--out", type=Path, help=f"write the table into this file ({END})")
    args = parser.parse_args()
    rounds, duration = (1, 2.0) if args.quick else (args.rounds, args.duration)
    before = os.getloadavg()[0]
    try:
        found = asyncio.run(measure(rounds, duration))
    except (KeyboardInterrupt, asyncio.CancelledError):
        log("interrupted; every process was stopped")
        sys.exit(130)
    except ServiceDied as exc:
        log(f"{exc}every other process was stopped")
        sys.exit(1)
    text = render(found, (before, os.getloadavg()[0]), duration)
    print(text)
    if args.out is not None:
        write(args.out if args.out.is_absolute() else REPO / args.out, text)


if __name__ == "__main__":
    cli()
