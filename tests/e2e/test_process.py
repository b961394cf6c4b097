"""sagewire as an operator runs it: start-up validation, SIGTERM, health probe."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
from processes import BIN, REPO, grpcurl, sagewire_process

pytestmark = pytest.mark.e2e


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "sagewire"), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_invalid_config_stops_startup_naming_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[routes.echo]\nendpoint = "echo"\nmode = "sometimes"\ntimout_s = 3\n')
    for command in (["check-config", str(bad)], ["serve", "--config", str(bad)]):
        result = _run(*command)
        assert result.returncode == 2
        assert "routes.echo.mode" in result.stderr
        assert "routes.echo.timout_s: unknown key" in result.stderr
        assert "Traceback" not in result.stderr


def test_an_option_the_routes_operation_does_not_take_stops_startup(tmp_path: Path) -> None:
    # InvokeEndpointWithResponseStream has no TargetModel: it used to be dropped silently.
    bad = tmp_path / "bad.toml"
    bad.write_text('[routes.mme]\nendpoint = "e"\nmode = "stream"\nallow = ["target_model"]\n')
    result = _run("check-config", str(bad))
    assert result.returncode == 2
    assert "routes.mme.allow: Value error, 'target_model': mode stream calls " in result.stderr
    assert "InvokeEndpointWithResponseStream" in result.stderr


def test_check_config_accepts_the_sample() -> None:
    result = _run("check-config", "config/local.toml")
    assert result.returncode == 0
    assert "OK" in result.stdout


def test_sigterm_drains_and_exits_zero() -> None:
    with sagewire_process("local", "--config", "config/local.toml") as process:
        probe = _run("health", "--target", process.target)
        assert probe.returncode == 0
        assert "SERVING" in probe.stdout
        assert grpcurl("-plaintext", process.target, "list").returncode == 0
        assert process.stop(signal.SIGTERM) == 0
        assert any("shutting down" in line for line in process.log)
    probe = _run("health", "--target", process.target, "--timeout", "1")
    assert probe.returncode == 1
