"""Profile sagewire's process under one benchmark load with pyinstrument.

    python -m bench.profile [--load unary|unary-1|unary-64|unary-256k|ttfp|stream|stream-16]

Starts the emulator and sagewire (under pyinstrument), drives the load from a load-generator
process, stops sagewire with SIGTERM so pyinstrument writes its session, then prints the call
tree and the functions with the most self time. The session is kept in
`.build/bench/profile-<load>.pyisession` (`pyinstrument --load FILE -r html` to browse it).
Only sagewire's main thread is sampled (the event loop, where Python runs); gRPC's C-core
threads are not.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from pyinstrument.renderers import ConsoleRenderer
from pyinstrument.session import Session

from bench.configs import write_configs
from bench.loads import LOADS, load_job
from bench.run import log, run_loadgen
from bench.services import REPO, Services, stop

OUT = REPO / ".build" / "bench"


async def profile(load: str, seconds: float, directory: Path) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    session_file = OUT / f"profile-{load}.pyisession"
    emulator_config, sagewire_config = write_configs(directory)
    launcher = [
        sys.executable,
        "-m",
        "pyinstrument",
        "-i",
        "0.0002",
        "-r",
        "pyisession",
        "-o",
        str(session_file),
    ]
    async with Services() as services:
        emulator = await services.emulator(emulator_config)
        sagewire = await services.sagewire(sagewire_config, emulator.address, launcher)
        log(f"profiling sagewire under '{load}' load for {seconds:g} s")
        for result in await run_loadgen(
            load_job(load, sagewire.address, seconds, rest_target=sagewire.rest_address),
            {"server": sagewire},
            seconds + 10,
        ):
            calls = max(result["calls"], 1)
            log(
                f"{result['calls_per_s']:.0f} calls/s, {result['items_per_s']:.0f} items/s, "
                f"p50 {result['p50_ms']:.2f} ms, first item p50 {result['first_p50_ms']:.2f} ms, "
                f"sagewire CPU {result['server_cpu_s'] / calls * 1e3:.3f} ms/call, "
                f"{result['errors']} errors"
            )
        await stop(sagewire.process)  # SIGTERM: sagewire drains, pyinstrument saves
    return session_file


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("--load", choices=list(LOADS), default="unary")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--top", type=int, default=40, help="functions listed by self time")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sagewire-profile-") as directory:
        session = Session.load(asyncio.run(profile(args.load, args.seconds, Path(directory))))
    # The call tree of the request path only; start-up imports and the idle loop are noise.
    tree = ConsoleRenderer(processor_options={"filter_threshold": 0.005}).render(session)
    print(tree)
    flat = ConsoleRenderer(flat=True, flat_time="self", show_all=True).render(session)
    print("\n".join(flat.splitlines()[: args.top + 8]))


if __name__ == "__main__":
    main()
