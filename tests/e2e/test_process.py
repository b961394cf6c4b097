"""sagewire as an operator runs it: start-up validation, SIGTERM, health probe."""

from __future__ import annotations

import base64
import os
import re
import signal
import socket
import subprocess
import time
import tomllib
from pathlib import Path

import pytest
from processes import BIN, REPO, grpcurl, sagewire_process

from sagewire.cli.main import main

pytestmark = pytest.mark.e2e


# Never the fixed ports of `make run`, should a process get as far as listening.
FREE_PORTS = {
    "SAGEWIRE_SERVER__LISTEN": "127.0.0.1:0",
    "SAGEWIRE_REST__LISTEN": "127.0.0.1:0",
    "SAGEWIRE_TELEMETRY__METRICS_LISTEN": "127.0.0.1:0",
}


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


def test_version() -> None:
    result = _run("--version")
    assert result.returncode == 0
    assert re.fullmatch(r"sagewire \d+\.\d+\.\d+\S*\n", result.stdout), result.stdout


def test_every_command_says_what_it_does(capsys: pytest.CaptureFixture[str]) -> None:
    # In-process: argparse prints the same help, without an interpreter start per command.
    commands = ["serve", "local", "check-config", "health", "invoke", "stream", "chat", "jobs"]
    for command in [*commands, "models"]:
        with pytest.raises(SystemExit) as exited:
            main([command, "--help"])
        assert exited.value.code == 0
        # argparse prints: usage block, blank line, description, blank line, arguments.
        blocks = capsys.readouterr().out.split("\n\n")
        assert len(blocks) >= 3, blocks
        description = blocks[1].strip()
        assert description, command
        assert not description.startswith(("options:", "positional arguments:")), command


@pytest.mark.parametrize("which", ["SAGEWIRE_SERVER__LISTEN", "SAGEWIRE_REST__LISTEN"])
@pytest.mark.parametrize("command", ["serve", "local", "serve --workers 2"])
def test_a_taken_port_is_one_line_naming_the_address(command: str, which: str) -> None:
    # With workers the parent checks before it reserves the ports with SO_REUSEPORT (which
    # would otherwise join a port another process holds with it) and before any worker starts.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        config = "config/local.toml" if command == "local" else "tests/e2e/minimal.toml"
        result = _run(*command.split(), "--config", config, env={which: address})
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"sagewire: cannot listen on {address} "
        f"({'gRPC, server.listen' if 'SERVER' in which else 'REST bridge, rest.listen'}): "
        "address already in use"
    ]


def test_serve_warns_without_routes_or_credentials(tmp_path: Path) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    nowhere = str(tmp_path / "none")
    no_credentials = {
        "AWS_ACCESS_KEY_ID": "",
        "AWS_SECRET_ACCESS_KEY": "",
        "AWS_SESSION_TOKEN": "",
        "AWS_PROFILE": "",
        "AWS_SHARED_CREDENTIALS_FILE": nowhere,
        "AWS_CONFIG_FILE": nowhere,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": "",
        "AWS_WEB_IDENTITY_TOKEN_FILE": "",
    }
    env = {key: value for key, value in no_credentials.items() if value}
    unset = [key for key, value in no_credentials.items() if not value]
    with sagewire_process("serve", "--config", str(empty), env=env, unset=unset) as process:
        deadline = time.monotonic() + 30
        while not all(
            any(text in line for line in process.log)
            for text in ("no routes are configured", "no AWS credentials found")
        ):
            assert time.monotonic() < deadline, "".join(process.log)
            time.sleep(0.1)
        probe = _run("health", "--target", process.target)
        assert "SERVING" in probe.stdout
        assert probe.returncode == 0


@pytest.mark.parametrize("count", ["0", "-1", "two", "257"])
def test_a_worker_count_out_of_range_is_a_usage_error(
    count: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--workers", count])
    assert exited.value.code == 2
    assert f"argument --workers: {count!r} is not a worker count (1-256)" in capsys.readouterr().err
