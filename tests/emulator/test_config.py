"""Config loading and validation: good files load, bad keys are named in the error."""

from __future__ import annotations

from pathlib import Path

import pytest

from sagewire.emulator import ConfigError, Fault, default_config, load_config, parse_config
from sagewire.emulator.faults import LognormalLatency


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "emulator.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_loads_models_containers_variants_and_faults(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """
            [endpoints.chat]
            model = "tokens"
            variants = ["AllTraffic", "B"]

            [endpoints.real]
            container_url = "http://127.0.0.1:8080"
            container_timeout_s = 5

            [endpoints.real.fault]
            latency_ms = 20
            error = "model_error"
            original_status = 503
            """,
        )
    )
    chat, real = config.endpoints["chat"], config.endpoints["real"]
    assert (chat.model, chat.variants, chat.fault) == ("tokens", ["AllTraffic", "B"], None)
    assert real.container_url == "http://127.0.0.1:8080"
    assert real.container_timeout_s == 5
    assert real.variants == ["AllTraffic"]
    assert real.fault == Fault(latency_ms=20, error="model_error", original_status=503)


def test_loads_cold_starts_error_rates_and_latency_distributions(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """
            [endpoints.serverless]
            model = "echo"
            [endpoints.serverless.fault]
            cold_for_s = 8
            error = "throttling"
            error_rate = 0.05
            seed = 3
            [endpoints.serverless.fault.latency]
            distribution = "lognormal"
            median_ms = 40
            sigma = 0.6
            """,
        )
    )
    fault = config.endpoints["serverless"].fault
    assert fault is not None
    assert (fault.cold_for_s, fault.error, fault.error_rate, fault.seed) == (
        8,
        "throttling",
        0.05,
        3,
    )
    assert fault.latency == LognormalLatency(distribution="lognormal", median_ms=40, sigma=0.6)


def test_default_config_has_the_documented_demo_endpoints() -> None:
    endpoints = default_config().endpoints
    assert set(endpoints) >= {
        "echo",
        "tokens",
        "firehose",
        "model-error",
        "not-ready",
        "throttled",
        "unavailable",
        "slow",
        "stream-error",
    }
    assert endpoints["echo"].fault is None
    assert endpoints["model-error"].fault == Fault(
        error="model_error", original_status=500, original_message="model crashed (demo)"
    )


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ('[endpoints.a]\nmodel = "echo"\nmodle = "x"', "endpoints.a.modle"),
        ('[endpoints.a]\nmodel = "echo"\n[endpoints.a.fault]\neror = "throttling"', "fault.eror"),
        ('[endpoints.a]\nmodel = "gpt"', "unknown model 'gpt'"),
        ('[endpoints.a]\nmodel = "echo"\n[endpoints.a.fault]\nerror = "boom"', "fault.error"),
        ('[endpoints.a]\nmodel = "echo"\n[endpoints.a.fault]\nlatency_ms = -1', "latency_ms"),
        ('[endpoints.a]\nmodel = "echo"\ncontainer_url = "http://h:1"', "exactly one"),
        ("[endpoints.a]\nvariants = []", "endpoints.a"),
        ('[endpoints.a]\ncontainer_url = "ftp://h"', "container_url"),
        ('[endpoints.a]\nmodel = "echo"\nvariants = ["bad_name"]', "variants.0"),
        ('[endpoints."bad name"]\nmodel = "echo"', "not a valid SageMaker name"),
        ('[endpoint.a]\nmodel = "echo"', "endpoint"),
        (
            '[endpoints.a]\nmodel = "echo"\n[endpoints.a.fault]\n'
            "stall_after_parts = 1\ndrop_after_parts = 2",
            "at most one of stall_after_parts, drop_after_parts",
        ),
    ],
)
def test_invalid_config_names_the_key(tmp_path: Path, toml: str, named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, toml))
    assert named in str(caught.value)
    assert str(tmp_path / "emulator.toml") in str(caught.value)


def test_bad_toml_and_missing_file_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(write(tmp_path, "[endpoints.a\n"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")


def test_parse_config_accepts_plain_dicts() -> None:
    config = parse_config({"endpoints": {"e": {"model": "echo", "fault": {"error": "throttling"}}}})
    assert config.endpoints["e"].fault == Fault(error="throttling")
