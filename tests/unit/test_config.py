"""Settings and the TOML loader: defaults, env overrides, and errors that name the key."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from sagewire.cli.main import main
from sagewire.config import (
    ConfigError,
    OptionName,
    RouteMode,
    RouteSettings,
    Settings,
    StreamFraming,
    load_settings,
)
from sagewire.config.settings import SAGEMAKER_MAX_BODY_BYTES

LOCAL_TOML = Path(__file__).resolve().parents[2] / "config" / "local.toml"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SAGEWIRE_* variable from the developer's shell leaks into these tests."""
    for name in list(os.environ):
        if name.upper().startswith("SAGEWIRE_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sagewire.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text))
    return info.value.problems


def test_defaults_are_sane() -> None:
    settings = load_settings()
    server, aws = settings.server, settings.aws
    assert server.listen == "127.0.0.1:50051"
    assert server.max_body_bytes == SAGEMAKER_MAX_BODY_BYTES == 6_291_456
    assert server.max_message_bytes > server.max_body_bytes
    assert server.reflection is True
    assert server.allow_endpoint_passthrough is False
    assert server.shutdown_grace_s == 10.0
    assert server.log_level == "INFO"
    assert aws.region == "us-east-1"
    assert aws.runtime_endpoint_url is None
    assert aws.s3_endpoint_url is None
    assert aws.read_timeout_s >= 60  # SageMaker lets a real-time model take 60 s
    assert (aws.max_attempts, aws.retry_mode) == (3, "standard")
    assert settings.routes == {}


def test_route_defaults_are_sane() -> None:
    route = RouteSettings(endpoint="e")
    assert route.mode is RouteMode.REALTIME
    assert route.framing is StreamFraming.RAW
    assert route.content_type == "application/json"
    assert route.accept == ""
    assert route.timeout_s == 60.0
    assert route.max_concurrency == 64
    assert route.allow == []


def test_the_shipped_local_config_loads() -> None:
    settings = load_settings(LOCAL_TOML)
    assert set(settings.routes) == {
        "echo",
        "tokens",
        "sse-tokens",
        "chat",
        "bidi-echo",
        "slow-echo",
        # Demo faults (the emulator's failing endpoints).
        "model-error",
        "not-ready",
        "throttled",
        "stream-error",
        # A cold start sagewire waits out (docs/resilience.md).
        "cold-start",
    }
    assert settings.routes["cold-start"].cold_start.max_backoff_s == 1
    assert settings.routes["not-ready"].cold_start.max_wait_s == 3
    assert settings.routes["stream-error"].mode is RouteMode.STREAM
    assert settings.routes["bidi-echo"].mode is RouteMode.BIDI
    assert settings.routes["slow-echo"].mode is RouteMode.ASYNC
    assert settings.async_jobs.keys()  # the dev-only key an async route needs
    tokens = settings.routes["tokens"]
    assert (tokens.mode, tokens.framing, tokens.timeout_s) == (
        RouteMode.STREAM,
        StreamFraming.LINES,
        300,
    )
    assert OptionName.FRAMING in tokens.allow


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('[routes.x]\nendpoint = "a"\nendpoit = "b"\n', "routes.x.endpoit: unknown key"),
        ('[sever]\nlisten = "x:1"\n', "sever: unknown key"),
        ('[server]\nlistn = "x:1"\n', "server.listn: unknown key"),
        (
            '[routes.x]\nendpoint = "a"\n[routes.x.defaults]\ninference_id = "i"\n',
            "routes.x.defaults.inference_id: unknown key",
        ),
        ('[routes.x]\nmode = "stream"\n', "routes.x.endpoint: Field required"),
    ],
)
def test_problem_is_exactly_the_named_key(tmp_path: Path, toml: str, expected: str) -> None:
    assert problems(tmp_path, toml) == [expected]


@pytest.mark.parametrize(
    ("toml", "prefix"),
    [
        (
            '[routes.x]\nendpoint = "a"\nmode = "batch"\n',
            "routes.x.mode: Input should be 'realtime'",
        ),
        ('[routes.x]\nendpoint = "bad_name"\n', "routes.x.endpoint: String should match pattern"),
        ('[routes.x]\nendpoint = "a"\nallow = ["nope"]\n', "routes.x.allow.0: Input should be"),
        ('[routes.x]\nendpoint = "a"\nframing = "json"\n', "routes.x.framing: Input should be"),
        ('[routes.x]\nendpoint = "a"\nmax_concurrency = 0\n', "routes.x.max_concurrency:"),
        ('[routes."bad/name"]\nendpoint = "a"\n', "routes.bad/name.[key]: String should match"),
        ("[server]\nmax_body_bytes = 6291457\n", "server.max_body_bytes: Input should be less"),
        ("[server]\nmax_message_bytes = 10\n", "server.max_message_bytes: Input should be"),
        ('[server]\nlisten = "no-port"\n', "server.listen: String should match pattern"),
        ('[server]\nlog_level = "TRACE"\n', "server.log_level: Input should be"),
        ('[aws]\nregion = "mars"\n', "aws.region: String should match pattern"),
        ('[aws]\nruntime_endpoint_url = "ftp://x"\n', "aws.runtime_endpoint_url:"),
        ('[aws]\nretry_mode = "forever"\n', "aws.retry_mode: Input should be"),
        ('[aws]\nclient = "boto3"\n', "aws.client: Input should be 'lean' or 'aioboto3'"),
    ],
)
def test_bad_values_name_their_key(tmp_path: Path, toml: str, prefix: str) -> None:
    [problem] = problems(tmp_path, toml)
    assert problem.startswith(prefix)


def test_lean_client_refuses_adaptive_retries(tmp_path: Path) -> None:
    [problem] = problems(tmp_path, '[aws]\nclient = "lean"\nretry_mode = "adaptive"\n')
    assert problem.startswith("aws: ")
    assert 'retry_mode "adaptive" needs client = "aioboto3"' in problem
    path = write(tmp_path, '[aws]\nclient = "aioboto3"\nretry_mode = "adaptive"\n')
    assert load_settings(path).aws.retry_mode == "adaptive"


def test_realtime_timeout_over_70_s_is_rejected(tmp_path: Path) -> None:
    [problem] = problems(tmp_path, '[routes.x]\nendpoint = "a"\ntimeout_s = 71\n')
    assert problem.startswith("routes.x: ")
    assert "timeout_s=71 exceeds 70s" in problem


def test_stream_routes_may_run_longer_than_70_s(tmp_path: Path) -> None:
    path = write(tmp_path, '[routes.x]\nendpoint = "a"\nmode = "stream"\ntimeout_s = 300\n')
    assert load_settings(path).routes["x"].timeout_s == 300


def test_every_problem_is_listed(tmp_path: Path) -> None:
    found = problems(tmp_path, '[server]\nlistn = 1\n[routes.x]\nendpoint = "a"\nmode = "b"\n')
    assert len(found) == 2
    assert "server.listn: unknown key" in found


def test_toml_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path, "[server\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    [problem] = info.value.problems
    assert problem.startswith("not valid TOML: ")
    assert "line 1" in problem
    assert str(path) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.problems == ["file not found"]
    assert info.value.source == str(path)


FILE = """
[server]
listen = "127.0.0.1:6000"
shutdown_grace_s = 5

[routes.echo]
endpoint = "echo"
timeout_s = 30
allow = ["custom_attributes"]
"""


def test_env_overrides_win_and_keep_the_rest_of_the_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAGEWIRE_SERVER__LISTEN", "0.0.0.0:7000")
    monkeypatch.setenv("SAGEWIRE_AWS__REGION", "eu-west-1")
    monkeypatch.setenv("SAGEWIRE_ROUTES__ECHO__TIMEOUT_S", "5")
    monkeypatch.setenv("SAGEWIRE_ROUTES__ECHO__ALLOW", '["target_variant", "inference_id"]')
    settings = load_settings(write(tmp_path, FILE))
    assert settings.server.listen == "0.0.0.0:7000"
    assert settings.server.shutdown_grace_s == 5  # from the file
    assert settings.aws.region == "eu-west-1"
    echo = settings.routes["echo"]
    assert echo.endpoint == "echo"  # from the file
    assert echo.timeout_s == 5
    assert echo.allow == [OptionName.TARGET_VARIANT, OptionName.INFERENCE_ID]


def test_env_can_add_a_route(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGEWIRE_ROUTES__EXTRA__ENDPOINT", "extra-endpoint")
    settings = load_settings(write(tmp_path, FILE))
    assert set(settings.routes) == {"echo", "extra"}


def test_env_overrides_win_over_programmatic_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAGEWIRE_SERVER__LISTEN", "0.0.0.0:7000")
    settings = load_settings(
        write(tmp_path, FILE),
        overrides={"server": {"listen": "10.0.0.1:1", "reflection": False}},
    )
    assert settings.server.listen == "0.0.0.0:7000"
    assert settings.server.reflection is False
    assert settings.server.shutdown_grace_s == 5


@pytest.mark.parametrize(
    ("name", "value", "key"),
    [
        ("SAGEWIRE_SERVER__LISTN", "x:1", "server.listn: unknown key"),
        ("SAGEWIRE_SERVER__MAX_BODY_BYTES", "lots", "server.max_body_bytes:"),
        ("SAGEWIRE_ROUTES__ECHO__MODE", "batch", "routes.echo.mode:"),
    ],
)
def test_bad_env_values_name_their_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str, key: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, FILE))
    assert any(p.startswith(key) for p in info.value.problems), info.value.problems


def test_non_json_env_for_a_list_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAGEWIRE_ROUTES__ECHO__ALLOW", "target_variant")
    with pytest.raises(ConfigError):
        load_settings(write(tmp_path, FILE))


def test_endpoint_name_longer_than_63_is_rejected() -> None:
    with pytest.raises(ValueError, match="endpoint"):
        RouteSettings(endpoint="a" + "-" * 70 + "b")


def test_route_defaults_are_validated_at_load(tmp_path: Path) -> None:
    found = problems(
        tmp_path, '[routes.x]\nendpoint = "a"\n[routes.x.defaults]\ntarget_variant = "bad one"\n'
    )
    assert any(p.startswith("routes.x.defaults.target_variant") for p in found)


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValueError, match="frozen"):
        setattr(settings.server, "listen", "0.0.0.0:1")  # noqa: B010 - bypass mypy on purpose


def test_check_config_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, FILE)
    assert main(["check-config", str(path)]) == 0
    assert capsys.readouterr().out.strip() == f"{path}: OK"


def test_check_config_exits_2_naming_the_bad_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, '[routes.x]\nendpoint = "a"\nendpoit = "b"\n')
    assert main(["check-config", str(path)]) == 2
    assert "routes.x.endpoit: unknown key" in capsys.readouterr().err


def test_fallbacks_take_names_or_tables_and_must_differ() -> None:
    route = RouteSettings.model_validate(
        {"endpoint": "a", "fallbacks": ["b", {"endpoint": "a", "target_variant": "Spot"}]}
    )
    assert [(f.endpoint, f.target_variant) for f in route.fallbacks] == [("b", ""), ("a", "Spot")]
    with pytest.raises(ValueError, match="must differ"):
        RouteSettings.model_validate({"endpoint": "a", "fallbacks": ["b", "b"]})
    with pytest.raises(ValueError, match="realtime and stream only"):
        RouteSettings.model_validate({"endpoint": "a", "mode": "bidi", "fallbacks": ["b"]})
    with pytest.raises(ValueError, match="min_backoff_s <= initial_backoff_s"):
        RouteSettings.model_validate({"endpoint": "a", "cold_start": {"initial_backoff_s": 9}})
