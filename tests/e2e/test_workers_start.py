"""`sagewire serve --workers N` while its workers are still starting: a stop signal does not wait
for them, and a start that never ends is bounded (server.worker_start_timeout_s).

A real hang, not a simulated one: the workers' AWS credentials come only from a
`credential_process` that never finishes (as a stuck credential helper or metadata service
would), so each worker waits on it inside its start-up, with its signal handlers installed. The
helper writes a line every 0.2 s, so it dies of SIGPIPE once the worker waiting on it is gone.
Every process of the tree is collected from /proc while it runs, and must be gone at the end.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path

import pytest
from processes import BIN

pytestmark = pytest.mark.e2e

CONFIG = """
[server]
listen = "127.0.0.1:0"

[aws]
runtime_endpoint_url = "http://127.0.0.1:9"
max_attempts = 1

[routes.echo]
endpoint = "echo"
"""
HUNG_CREDENTIALS = """
[default]
credential_process = /bin/sh -c "while :; do echo; sleep 0.2; done"
"""


def _hung_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a sagewire whose only AWS credentials are the hung helper's."""
    aws_config = tmp_path / "aws-config"
    aws_config.write_text(HUNG_CREDENTIALS)
    keep = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    keep.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return {
        **keep,
        "AWS_CONFIG_FILE": str(aws_config),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials-file"),
        "SAGEWIRE_REST__LISTEN": "127.0.0.1:0",
        "SAGEWIRE_TELEMETRY__METRICS_LISTEN": "127.0.0.1:0",
        **extra,
    }


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of `pid` from /proc, or None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, ppid = text.rpartition(")")[2].split()[:2]
    return state, int(ppid)


def _alive(pid: int) -> bool:
    found = _stat(pid)
    return found is not None and found[0] != "Z"  # a zombie has exited


def _descendants(root: int) -> dict[int, str]:
    """Every live process below `root`: pid -> command line."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (found := _stat(int(entry))) is not None:
            parents[int(entry)] = found[1]
    below: dict[int, str] = {}
    frontier = {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - below.keys()
        for pid in frontier:
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                command = b""
            below[pid] = command.decode(errors="replace")
    return below


class Tree:
    """Every process seen below a root while it runs (polled every 50 ms)."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.seen: dict[int, str] = {}
        self._task = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        while _alive(self.root):
            self.seen.update(_descendants(self.root))
            await asyncio.sleep(0.05)

    def helpers(self) -> int:
        """How many hung credential helpers are running now."""
        return sum(1 for pid, cmd in self.seen.items() if "while :" in cmd and _alive(pid))

    async def all_gone(self, within_s: float = 30) -> list[str]:
        """The processes still alive `within_s` after the root's end (none, when all went)."""
        self._task.cancel()
        for _ in range(int(within_s / 0.1)):
            if not any(_alive(pid) for pid in self.seen):
                break
            await asyncio.sleep(0.1)
        return [f"{pid} {cmd}" for pid, cmd in self.seen.items() if _alive(pid)]

    def kill_all(self) -> None:
        for pid in [self.root, *self.seen]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


async def _serve_hung(tmp_path: Path, **env: str) -> tuple[asyncio.subprocess.Process, Tree]:
    config = tmp_path / "sagewire.toml"
    config.write_text(CONFIG)
    run = await asyncio.create_subprocess_exec(
        str(BIN / "sagewire"),
        *("serve", "--config", str(config), "--workers", "2"),
        env=_hung_env(tmp_path, **env),
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
    )
    return run, Tree(run.pid)


async def test_a_signal_during_start_up_stops_every_worker_at_once(tmp_path: Path) -> None:
    run, tree = await _serve_hung(tmp_path)
    try:
        # Both workers are inside their start-up, each waiting on its credential helper.
        for _ in range(900):  # spawning two interpreters on a busy machine: up to 90 s
            if tree.helpers() == 2:
                break
            assert run.returncode is None
            await asyncio.sleep(0.1)
        assert tree.helpers() == 2, tree.seen
        run.send_signal(signal.SIGTERM)
        # Before the fix the parent waited for both workers to become ready: forever here.
        _, err = await asyncio.wait_for(run.communicate(), 60)
        left = await tree.all_gone()
    finally:
        tree.kill_all()
    log = err.decode()
    assert run.returncode == 0, log
    assert "signal received during start-up: stopping the workers" in log
    assert log.count("worker stopped during start-up") == 2, log
    assert "killed" not in log  # each worker ended its own start; none needed SIGKILL
    assert "sagewire ready" not in log
    assert "Traceback" not in log
    assert left == []


async def test_a_start_up_past_the_bound_stops_every_worker_and_fails(tmp_path: Path) -> None:
    # The workers can never become ready here, so the short bound cannot fire by accident.
    run, tree = await _serve_hung(tmp_path, SAGEWIRE_SERVER__WORKER_START_TIMEOUT_S="2")
    try:
        _, err = await asyncio.wait_for(run.communicate(), 90)
        left = await tree.all_gone()
    finally:
        tree.kill_all()
    log = err.decode()
    assert run.returncode == 1, log
    late = re.findall(
        r"ERROR sagewire\.workers worker (\d) \(pid \d+\) not ready within 2s "
        r"\(server\.worker_start_timeout_s\): stopping every worker",
        log,
    )
    assert sorted(late) == ["0", "1"], log
    assert "sagewire ready" not in log
    assert "Traceback" not in log
    assert left == []
