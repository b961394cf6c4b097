"""bench.lean_call's measuring run: it drives the real lean path against its canned answer and
gets the body back whole (a run that failed or changed the body would print no figure)."""

from __future__ import annotations

import os
import subprocess
import sys

from bench.services import REPO


def test_one_run_invokes_through_the_lean_path_and_prints_cpu_per_call() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SAGEWIRE_"))}
    done = subprocess.run(
        [sys.executable, "-m", "bench.lean_call", "--child", "50"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout.strip().splitlines()[-1]) > 0
