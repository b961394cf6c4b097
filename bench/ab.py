"""Is a change to sagewire faster? Two sagewire processes side by side, measured in turns.

    git worktree add /tmp/sagewire-base HEAD~1        # or any revision to compare against
    python -m bench.ab --baseline /tmp/sagewire-base/src [--loads unary,stream-16] [--rounds 6]
    python -m bench.ab --baseline src --baseline-env SAGEWIRE_REST__LISTEN=   # REST off vs on
    python -m bench.ab --observability [--loads unary]  # this tree: metrics and logs off vs on
    python -m bench.ab --baseline /tmp/sagewire-base/src --observed  # both with them on

A runs the `sagewire` package found in `--baseline` (put first on PYTHONPATH; the generated
protobuf code still comes from this checkout), B runs this working tree. With
`--observability` both run this tree: A with no metrics listener and no access log, B with
Prometheus metrics and a JSON access record per call (the drained pipe of a log shipper; OTLP
is left out, it needs a collector). Both serve the same
emulator, and every round runs each load against A and B in alternating order, so a busy
neighbour or thermal drift hits both alike. The decision metric is sagewire's own CPU per call
or relayed part (psutil user + system time), which background load disturbs far less than
throughput; throughput and latency are printed next to it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bench.configs import write_configs
from bench.loads import LOADS, load_job
from bench.run import log, run_loadgen
from bench.services import Services


@dataclass
class Tally:
    cpu_us: list[float] = field(default_factory=list)
    rate: list[float] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)
    first_ms: list[float] = field(default_factory=list)
    errors: int = 0


# --observability: the same tree, everything off (A) against metrics and JSON logs on (B).
OBSERVABILITY_OFF = {
    "SAGEWIRE_SERVER__LOG_LEVEL": "INFO",
    "SAGEWIRE_SERVER__ACCESS_LOG": "false",
}
OBSERVABILITY_ON = {
    "SAGEWIRE_SERVER__LOG_LEVEL": "INFO",
    "SAGEWIRE_SERVER__ACCESS_LOG": "true",
    "SAGEWIRE_SERVER__LOG_FORMAT": "json",
    "SAGEWIRE_TELEMETRY__METRICS_LISTEN": "127.0.0.1:0",
}


async def compare(
    env_a: dict[str, str], env_b: dict[str, str], loads: list[str], rounds: int, seconds: float
) -> None:
    with tempfile.TemporaryDirectory(prefix="sagewire-ab-") as directory:
        emulator_config, sagewire_config = write_configs(Path(directory))
        async with Services() as services:
            emulator = await services.emulator(emulator_config)
            a = await services.sagewire(
                sagewire_config, emulator.address, extra_env=env_a, name="A"
            )
            b = await services.sagewire(
                sagewire_config, emulator.address, extra_env=env_b, name="B"
            )
            for load in loads:
                tallies = {"A": Tally(), "B": Tally()}
                for turn in range(rounds):
                    pair = [("A", a), ("B", b)]
                    for name, service in pair if turn % 2 == 0 else pair[::-1]:
                        job = load_job(load, service.address, seconds, 0.3, service.rest_address)
                        watch = {"server": service}
                        for result in await run_loadgen(
                            job, watch, seconds + 20, ours=services.running
                        ):
                            tally = tallies[name]
                            items = max(result["items"], 1)
                            tally.cpu_us.append(result["server_cpu_s"] / items * 1e6)
                            tally.rate.append(result["items_per_s"])
                            tally.p50_ms.append(result["p50_ms"])
                            tally.first_ms.append(result["first_p50_ms"])
                            tally.errors += result["errors"]
                _print(load, tallies)


def _print(load: str, tallies: dict[str, Tally]) -> None:
    med = statistics.median
    what = LOADS[load][0]
    print(f"\n{load} ({what}, concurrency {LOADS[load][2]}), medians over {len(tallies['A'].rate)}")
    for name, t in tallies.items():
        print(
            f"  {name}: CPU {med(t.cpu_us):7.1f} µs/item ({min(t.cpu_us):.0f}–{max(t.cpu_us):.0f})"
            f"  {med(t.rate):8.0f} items/s  p50 {med(t.p50_ms):7.2f} ms"
            f"  first item p50 {med(t.first_ms):6.2f} ms  errors {t.errors}"
        )
    a, b = tallies["A"], tallies["B"]
    # Each round ran A and B back to back: the ratio within a round cancels what the machine
    # did over the whole run, so its median is steadier than the ratio of medians.
    paired = sorted(y / x for x, y in zip(a.cpu_us, b.cpu_us, strict=True))
    print(
        f"  B/A: CPU per item {med(b.cpu_us) / med(a.cpu_us):.2f}×, "
        f"items/s {med(b.rate) / med(a.rate):.2f}×; "
        f"paired CPU per item {med(paired):.3f}× ({paired[0]:.2f}–{paired[-1]:.2f})",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", type=Path, help="directory holding sagewire/")
    parser.add_argument(
        "--observability",
        action="store_true",
        help="compare this tree with metrics and logs off (A) and on (B)",
    )
    parser.add_argument("--loads", default="unary,unary-1,ttfp,stream-16")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument(
        "--baseline-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an environment variable for A only (e.g. SAGEWIRE_REST__LISTEN= turns its REST "
        "bridge off)",
    )
    parser.add_argument(
        "--observed",
        action="store_true",
        help="with --baseline: both sides with metrics and JSON access records on (what "
        "--observability turns on), to compare the cost of observing between two trees",
    )
    args = parser.parse_args()
    a_env = dict(item.partition("=")[::2] for item in args.baseline_env)
    loads = args.loads.split(",")
    unknown = sorted(set(loads) - set(LOADS))
    if unknown:
        parser.error(f"unknown loads {unknown} (known: {', '.join(LOADS)})")
    if args.observability:
        log(f"A = metrics and logs off, B = on (this tree); loads {', '.join(loads)}")
        env_a, env_b = {**OBSERVABILITY_OFF, **a_env}, OBSERVABILITY_ON
    elif args.baseline is None or not (args.baseline / "sagewire").is_dir():
        parser.error("--baseline must name a directory holding sagewire/ (or use --observability)")
    else:
        log(f"A = {args.baseline}, B = this working tree; loads {', '.join(loads)}")
        env_a, env_b = {"PYTHONPATH": str(args.baseline.resolve()), **a_env}, {}
        if args.observed:
            env_a, env_b = {**OBSERVABILITY_ON, **env_a}, {**OBSERVABILITY_ON}
    asyncio.run(compare(env_a, env_b, loads, args.rounds, args.seconds))


if __name__ == "__main__":
    main()
