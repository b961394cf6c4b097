"""Pure pieces of async inference: settings checks, S3 locations, polling backoff."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from pydantic import ValidationError

from sagewire.config import ConfigError, load_settings
from sagewire.config.async_jobs import AsyncJobSettings, AsyncRouteSettings
from sagewire.core.async_types import JobState, S3Location
from sagewire.core.backoff import backoff_delay

KEY = base64.b64encode(b"k" * 32).decode()


def test_keys_decode_from_standard_or_urlsafe_base64() -> None:
    raw = bytes(range(200, 240))
    for text in (
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
    ):
        assert AsyncJobSettings(job_id_keys=[text]).keys() == [raw]  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("key", "problem"),
    [("not-base64!", "not valid base64"), (base64.b64encode(b"short").decode(), "at least 32")],
)
def test_bad_keys_are_refused_without_echoing_them(key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(overrides={"async_jobs": {"job_id_keys": ["x" * 44, key]}})
    (line,) = caught.value.problems
    assert line.startswith("async_jobs.job_id_keys.")
    assert problem in line
    assert key not in str(caught.value)
    assert "x" * 44 not in str(caught.value)


def test_keys_never_show_in_a_repr() -> None:
    settings = AsyncJobSettings(job_id_keys=[KEY])  # type: ignore[list-item]
    assert KEY not in repr(settings)
    assert KEY not in str(settings.model_dump())


@pytest.mark.parametrize(
    "prefix", ["s3://bucket/no-slash", "https://bucket/x/", "s3://B/x/", "s3://bucket"]
)
def test_allowed_input_prefixes_must_be_s3_and_end_in_a_slash(prefix: str) -> None:
    with pytest.raises(ValidationError, match="must be s3://"):
        AsyncRouteSettings(allowed_input_prefixes=[prefix])


def test_ttl_and_timeout_defaults_stay_in_sagemakers_ranges() -> None:
    with pytest.raises(ValidationError):
        AsyncRouteSettings(request_ttl_seconds=59)
    with pytest.raises(ValidationError):
        AsyncRouteSettings(invocation_timeout_seconds=3601)
    assert AsyncRouteSettings().request_ttl_seconds == 21_600


def test_an_async_route_without_a_key_stops_start_up_naming_the_key() -> None:
    results = {"output_prefix": "s3://results/out/"}
    routes = {
        "batch": {"endpoint": "e", "mode": "async", "async": results},
        "rt": {"endpoint": "e"},
    }
    with pytest.raises(ConfigError) as caught:
        load_settings(overrides={"routes": routes})
    assert caught.value.problems == [
        "routes: Value error, batch: mode async needs at least one key in "
        "async_jobs.job_id_keys (see docs/async.md)"
    ]
    settings = load_settings(overrides={"routes": routes, "async_jobs": {"job_id_keys": [KEY]}})
    assert settings.async_jobs.keys() == [b"k" * 32]


def test_keys_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGEWIRE_ASYNC_JOBS__JOB_ID_KEYS", f'["{KEY}"]')
    assert load_settings().async_jobs.keys() == [b"k" * 32]


def test_s3_locations() -> None:
    location = S3Location.parse("s3://my-bucket/in/doc 1.json")
    assert location == S3Location("my-bucket", "in/doc 1.json")
    assert str(location) == "s3://my-bucket/in/doc 1.json"
    assert location.under("s3://my-bucket/in/")
    assert not location.under("s3://my-bucket/input/")
    assert not location.under("s3://my-bucket-2/")
    for bad in (
        "s3://my-bucket/",
        "s3://my-bucket",
        "https://my-bucket/x",
        "s3://B/x",
        "s3://b/\n",
    ):
        assert S3Location.parse(bad) is None


def test_backoff_doubles_to_the_cap_with_equal_jitter() -> None:
    low = [backoff_delay(n, 0.5, 4.0, lambda: 0.0) for n in range(6)]
    high = [backoff_delay(n, 0.5, 4.0, lambda: 1.0) for n in range(6)]
    assert high == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert low == [h / 2 for h in high]
    assert backoff_delay(10_000, 0.5, 4.0, lambda: 1.0) == 4.0


def test_terminal_states() -> None:
    assert [s for s in JobState if s.terminal] == [
        JobState.COMPLETED,
        JobState.FAILED,
        JobState.EXPIRED,
    ]


def test_the_published_development_key_is_the_one_in_local_toml() -> None:
    settings = load_settings(Path(__file__).resolve().parents[2] / "config" / "local.toml")
    assert settings.async_jobs.published_keys() == [0]
    assert AsyncJobSettings.model_validate({"job_id_keys": [KEY]}).published_keys() == []
