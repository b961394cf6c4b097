"""docs/client.md and the README's Python example run as printed, against `sagewire local`.

Every ```python and ```sh block runs (a block after an `<!-- not run: why -->` line does not),
with one rewrite: `127.0.0.1:50051`, `make run`'s address, becomes the test server's. Shell
blocks find it through SAGEWIRE_TARGET, as a user's shell would. The service config printed
as JSON must equal the one the client uses.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from processes import BIN, REPO, Process, sagewire_process

from sagewire.client import RETRY_SERVICE_CONFIG

pytestmark = pytest.mark.e2e

MAKE_RUN_TARGET = "127.0.0.1:50051"
BLOCK = re.compile(r"(<!-- not run[^>]*-->\n)?```(\w+)\n(.*?)```", re.DOTALL)


def blocks(doc: str, language: str) -> list[str]:
    text = (REPO / doc).read_text()
    return [body for skip, lang, body in BLOCK.findall(text) if lang == language and not skip]


@pytest.fixture(scope="module")
def local() -> Iterator[Process]:
    with sagewire_process("local", "--config", "config/local.toml") as process:
        yield process


def _run(command: list[str], local: Process, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "SAGEWIRE_TARGET": local.target, "HOME": str(cwd)}
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize(
    ("doc", "index"),
    [("docs/client.md", i) for i in range(len(blocks("docs/client.md", "python")))]
    + [("README.md", i) for i in range(len(blocks("README.md", "python")))],
)
def test_python_blocks_run(local: Process, tmp_path: Path, doc: str, index: int) -> None:
    code = blocks(doc, "python")[index].replace(MAKE_RUN_TARGET, local.target)
    done = _run([sys.executable, "-c", code], local, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout  # every example prints what it got


@pytest.mark.parametrize("index", range(len(blocks("docs/client.md", "sh"))))
def test_shell_blocks_run(local: Process, tmp_path: Path, index: int) -> None:
    script = "set -euo pipefail\n" + blocks("docs/client.md", "sh")[index]
    done = _run(["bash", "-c", script], local, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout


def test_documented_service_config_is_the_clients() -> None:
    (printed,) = blocks("docs/client.md", "json")
    assert json.loads(printed) == RETRY_SERVICE_CONFIG
