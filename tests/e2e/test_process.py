"""sagewire as an operator runs it: start-up validation, SIGTERM, health probe."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import tomllib
from pathlib import Path

import pytest
from processes import BIN, REPO, grpcurl, sagewire_process

pytestmark = pytest.mark.e2e


# Never the fixed ports of `make run`, should a process get as far as listening.
FREE_PORTS = {"SAGEWIRE_SERVER__LISTEN": "127.0.0.1:0", "SAGEWIRE_REST__LISTEN": "127.0.0.1:0"}


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "sagewire"), *args],
        cwd=REPO,
        env={**os.environ, **FREE_PORTS, **(env or {})},
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


def test_check_config_of_a_directory_is_a_config_error(tmp_path: Path) -> None:
    result = _run("check-config", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().endswith("is a directory; pass a TOML file")
    assert "Traceback" not in result.stderr


def _published_key() -> str:
    local = tomllib.loads((REPO / "config" / "local.toml").read_text())
    key: str = local["async_jobs"]["job_id_keys"][0]
    return key


def test_serve_refuses_the_development_key_published_in_local_toml(tmp_path: Path) -> None:
    published = _published_key()
    # The same key in URL-safe base64 without padding is the same key.
    respelled = published.replace("+", "-").replace("/", "_").rstrip("=")
    config = tmp_path / "prod.toml"
    config.write_text(
        f'[async_jobs]\njob_id_keys = ["{base64.b64encode(os.urandom(32)).decode()}"]\n'
    )
    for args, env in (
        (["serve", "--config", "config/local.toml"], {}),
        (
            ["serve", "--config", str(config)],
            {"SAGEWIRE_ASYNC_JOBS__JOB_ID_KEYS": f'["{respelled}"]'},
        ),
    ):
        result = _run(*args, env=env)
        assert result.returncode == 2, result.stderr
        assert "async_jobs.job_id_keys[0]: is the development key published in" in result.stderr
        assert published not in result.stderr
        assert respelled not in result.stderr
        assert "sagewire ready" not in result.stderr
    # The control: the same file with a key of its own is a valid configuration.
    assert _run("check-config", str(config)).returncode == 0
