"""Every code block in README.md and docs/ that claims to run is run here, as printed, against a
`sagewire local` this test starts on free ports (the convention is in CONTRIBUTING.md, "Docs
that run").

A block runs when the line before its fence is `<!-- doc-test: run -->`, optionally with
`exit=N` (the block's expected exit status, default 0; `exit=fail`: any but 0) and
`expect="text"` (must appear in what it prints; may repeat). How it runs depends on its language:

- `sh`, `bash`: one bash process per block (`set -euo pipefail`), so variables carry from line to
  line as in a terminal;
- `console`: the same, for the lines after `$ ` (and their `\\` continuations); the other lines
  are the printed output and are not run;
- `python`: a script run by the project's Python;
- `toml`: `sagewire check-config` (or, with `<!-- doc-test: emulator-config -->`, the
  emulator's `load_config`).

The only rewrite is the address: `make run`'s 127.0.0.1:50051 (gRPC), 127.0.0.1:8080 (REST) and
127.0.0.1:9464 (metrics), also spelled `localhost`, become the test server's. Blocks run with
the repository as their working directory and `.venv/bin` first on PATH.

Blocks in languages that look runnable (sh, bash, console, python) must say what becomes of
them: `doc-test: run`, `<!-- not run: why -->`, or a harness of their own (OWN_HARNESS). And
every relative link in the docs must name a file in the repository.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from processes import BIN, REPO, Process, sagewire_process

from sagewire.emulator.config import load_config

pytestmark = pytest.mark.e2e

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "CONTRIBUTING.md"]
GRPC_ADDRESSES = ("127.0.0.1:50051", "localhost:50051")
REST_ADDRESSES = ("127.0.0.1:8080", "localhost:8080")
METRICS_ADDRESSES = ("127.0.0.1:9464", "localhost:9464")
RUNNABLE_LOOKING = {"sh", "bash", "shell", "console", "python"}
# Docs whose blocks another harness runs as printed; README blocks by what they use.
OWN_HARNESS = {
    "docs/client.md": "tests/e2e/test_client_docs.py",
    "docs/rest.md": "tests/e2e/test_curl.py, tests/e2e/test_rest_websocket_doc.py",
    "docs/converse.md": "tests/e2e/test_grpcurl_converse.py, tests/e2e/test_grpcurl_bidi.py",
    "docs/security.md": "tests/e2e/test_security_walkthrough.py",
    "docs/observability.md": "tests/e2e/test_otlp.py",
}
_FENCE = re.compile(r"^(?:(<!--[^\n]*-->)\n)?```(\w*)\n(.*?)^```", re.DOTALL | re.MULTILINE)
_OPTION = re.compile(r'(\w+)=("[^"]*"|\S+)')


@dataclass
class Block:
    doc: str
    line: int
    language: str
    body: str
    marker: str  # the HTML comment right before the fence, or ""
    expect_exit: int | None = 0  # None: any non-zero status (`exit=fail`)
    expect: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.doc}:{self.line}"

    @property
    def kind(self) -> str:
        found = re.match(r"<!--\s*doc-test:\s*([\w-]+)", self.marker)
        return found.group(1) if found else ""


def blocks() -> list[Block]:
    found = []
    for path in DOCS:
        if not path.exists():
            continue
        text = path.read_text(encoding="utf-8")
        for match in _FENCE.finditer(text):
            marker, language, body = match.group(1) or "", match.group(2), match.group(3)
            line = text.count("\n", 0, match.start(2)) + 1
            block = Block(str(path.relative_to(REPO)), line, language, body, marker)
            for key, raw in _OPTION.findall(marker.removeprefix("<!--").removesuffix("-->")):
                value = raw.strip('"')
                if key == "exit":
                    block.expect_exit = None if value == "fail" else int(value)
                elif key == "expect":
                    block.expect.append(value)
            found.append(block)
    return found


RUN = [b for b in blocks() if b.kind == "run"]
CONFIGS = [b for b in blocks() if b.kind in ("sagewire-config", "emulator-config")]


@pytest.fixture(scope="module")
def local() -> Iterator[Process]:
    with sagewire_process("local", "--config", "config/local.toml") as process:
        yield process


def _rewrite(text: str, local: Process) -> str:
    rest = local.rest_url.removeprefix("http://")
    for address in GRPC_ADDRESSES:
        text = text.replace(address, local.target)
    for address in REST_ADDRESSES:
        text = text.replace(address, rest)
    metrics = local.metrics_url.removeprefix("http://").removesuffix("/metrics")
    for address in METRICS_ADDRESSES:
        text = text.replace(address, metrics)
    return text


def _console_commands(body: str) -> str:
    """The commands of a console transcript: `$ ` lines and their continuations."""
    commands, continuing = [], False
    for line in body.splitlines():
        if continuing or line.startswith("$ "):
            commands.append(line.removeprefix("$ ") if not continuing else line)
            continuing = line.endswith("\\")
    return "\n".join(commands) + "\n"


def _command(block: Block, code: str) -> list[str]:
    if block.language in ("sh", "bash", "shell"):
        return ["bash", "-c", "set -euo pipefail\n" + code]
    if block.language == "console":
        return ["bash", "-c", "set -euo pipefail\n" + _console_commands(code)]
    if block.language == "python":
        return [sys.executable, "-c", code]
    raise AssertionError(f"{block.name}: doc-test cannot run a {block.language!r} block")


@pytest.mark.parametrize("block", RUN, ids=lambda b: b.name)
def test_block_runs_as_printed(local: Process, block: Block) -> None:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    done = subprocess.run(
        _command(block, _rewrite(block.body, local)),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    printed = done.stdout + done.stderr
    exited = done.returncode
    ok = exited != 0 if block.expect_exit is None else exited == block.expect_exit
    assert ok, f"{block.name} exited {exited}:\n{printed}"
    for text in block.expect:
        assert text in printed, f"{block.name}: {text!r} not in:\n{printed}"


@pytest.mark.parametrize("block", CONFIGS, ids=lambda b: b.name)
def test_config_block_is_valid(block: Block, tmp_path: Path) -> None:
    path = tmp_path / "printed.toml"
    path.write_text(block.body, encoding="utf-8")
    tomllib.loads(block.body)
    if block.kind == "emulator-config":
        load_config(path)
        return
    done = subprocess.run(
        [str(BIN / "sagewire"), "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"{block.name}: {done.stderr}"


def _claimed(block: Block) -> bool:
    if block.doc in OWN_HARNESS:
        return True
    # README: the curl block (test_curl.py) and the Python client example (test_client_docs.py).
    return block.doc == "README.md" and (
        block.language == "python" or re.search(r"(^|\s)curl\s", block.body) is not None
    )


def test_every_runnable_looking_block_says_what_becomes_of_it() -> None:
    unsaid = [
        b.name
        for b in blocks()
        if b.language in RUNNABLE_LOOKING
        and not b.kind
        and not b.marker.startswith("<!-- not run")
        and not _claimed(b)
    ]
    assert not unsaid, (
        "mark these blocks `<!-- doc-test: run -->` (then they must run as printed) or "
        f"`<!-- not run: why -->` (see CONTRIBUTING.md): {unsaid}"
    )


def test_the_harness_finds_what_it_should() -> None:
    assert len(RUN) >= 5
    assert all(b.body for b in RUN)
    transcript = "$ echo one \\\n    two\none two\n$ echo three\nthree\n"
    assert shlex.split(_console_commands(transcript).replace("\\\n", " ")) == [
        "echo",
        "one",
        "two",
        "echo",
        "three",
    ]


_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def test_relative_links_stay_in_the_repository() -> None:
    broken = []
    for path in DOCS:
        if not path.exists():
            continue
        text = path.read_text(encoding="utf-8")
        for target in _LINK.findall(text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            file = (path.parent / target.split("#")[0]).resolve()
            if not file.is_relative_to(REPO) or not file.exists():
                broken.append(f"{path.relative_to(REPO)}: {target}")
        for absolute in re.findall(r"`(/work/[^`]*)`", text):
            broken.append(f"{path.relative_to(REPO)}: {absolute} (outside the repository)")
    assert not broken, broken
