"""docs/security.md's walkthrough, run as printed: `make demo-certs`, `sagewire local` with
config/secure-local.toml (ports changed to free ones), then every command of the third block
with the real grpcurl, curl and sagewire binaries, in one bash session, each checked."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator

import pytest
from processes import BIN, REPO, Process, sagewire_process

pytestmark = pytest.mark.e2e

DOC = REPO / "docs" / "security.md"
_BLOCK = re.compile(r"```sh\n(.*?)```", re.DOTALL)
_HEALTH = re.compile(r"health \(plaintext\) on ([^\s]+)")


def _blocks() -> list[list[str]]:
    section = DOC.read_text().split("## Walkthrough", 1)[1].split("\n## ", 1)[0]
    return [
        [line for line in block.splitlines() if line and not line.startswith("#")]
        for block in _BLOCK.findall(section)
    ]


def _run(command: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", "-c", command],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _echo(inputs: str) -> Callable[[subprocess.CompletedProcess[str]], None]:
    def check(result: subprocess.CompletedProcess[str]) -> None:
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["json"] == {"inputs": inputs}

    return check


def _denied(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode != 0
    assert "Code: PermissionDenied" in result.stdout + result.stderr
    assert '"reason":"MODEL_NOT_PERMITTED"' in result.stdout + result.stderr


def _handshake_fails(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode != 0
    assert "Failed to dial target host" in result.stderr


def _only_tokens(result: subprocess.CompletedProcess[str]) -> None:
    assert [m["name"] for m in json.loads(result.stdout)["models"]] == ["tokens"]


def _serving(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(": SERVING")


def _ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr


CHECKS = [
    _echo("hi"),
    _denied,
    _handshake_fails,
    _echo("hi"),
    _only_tokens,
    _serving,
    _ok,
    _ok,
    _echo("again"),
]


@pytest.fixture
def secure_local() -> Iterator[Process]:
    certs = REPO / "demo-certs"
    make, start, _ = _blocks()
    assert make == ["make demo-certs"]
    result = _run(make[0])
    assert result.returncode == 0, result.stderr
    assert start == ["sagewire local --config config/secure-local.toml"]
    env = {"SAGEWIRE_SERVER__MAINTENANCE_LISTEN": "127.0.0.1:0"}
    try:
        with sagewire_process(*start[0].split()[1:], env=env) as process:
            yield process
    finally:
        shutil.rmtree(certs, ignore_errors=True)


def test_walkthrough_runs_as_printed(secure_local: Process) -> None:
    commands = _blocks()[2]
    assert len(commands) == len(CHECKS)
    grpc_port = secure_local.target.rsplit(":", 1)[1]
    rest_port = secure_local.rest_url.rsplit(":", 1)[1]
    health = next(m.group(1) for line in secure_local.log if (m := _HEALTH.search(line)))
    for command, check in zip(commands, CHECKS, strict=True):
        line = (
            command.replace("localhost:50051", f"localhost:{grpc_port}")
            .replace("localhost:8080", f"localhost:{rest_port}")
            .replace("127.0.0.1:8081", health)
        )
        check(_run(line))
    audit = [line for line in secure_local.log if "sagewire.audit" in line]
    assert any(
        "principal='spiffe://example.org/ns/other/sa/batch' "
        "method=/sagewire.v1.InferenceService/Invoke model='echo' status=PERMISSION_DENIED "
        "reason=MODEL_NOT_PERMITTED" in line
        for line in audit
    )
