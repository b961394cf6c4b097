"""Converse's pure parts: route settings and SageMaker's NewSessionId header."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sagewire.config import ConfigError, load_settings
from sagewire.config.converse import ConverseSettings
from sagewire.core.converse_sessions import parse_session_header


def test_defaults_run_one_turn_at_a_time_without_sessions() -> None:
    settings = ConverseSettings()
    assert (settings.max_concurrent_turns, settings.sessions) == (1, False)
    assert settings.max_buffered_chunks > 0
    assert settings.idle_timeout_s < settings.max_duration_s


@pytest.mark.parametrize("key", ["open_body", "close_body", "reopen_expired"])
def test_session_keys_need_sessions(key: str) -> None:
    value: object = True if key == "reopen_expired" else "{}"
    with pytest.raises(ConfigError) as caught:
        load_settings(overrides={"routes": {"r": {"endpoint": "e", "converse": {key: value}}}})
    assert caught.value.problems == [f"routes.r.converse: Value error, {key} needs sessions = true"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("max_concurrent_turns", 0),
        ("max_queued_turns", -1),
        ("max_buffered_chunks", 0),
        ("idle_timeout_s", 0),
        ("max_duration_s", 100_000),
        ("sesions", True),
    ],
)
def test_out_of_range_or_unknown_keys_name_the_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(overrides={"routes": {"r": {"endpoint": "e", "converse": {key: value}}}})
    assert caught.value.problems[0].startswith(f"routes.r.converse.{key}: ")


@pytest.mark.parametrize(
    ("header", "session_id", "expires"),
    [
        ("abc; Expires=2030-01-02T03:04:05Z", "abc", datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("abc;expires=2030-01-02T03:04:05", "abc", datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("abc; Expires=soon", "abc", None),
        ("abc", "abc", None),
        ("", "", None),
    ],
)
def test_new_session_header(header: str, session_id: str, expires: datetime | None) -> None:
    assert parse_session_header(header) == (session_id, expires)


def test_bidi_routes_refuse_stateful_sessions() -> None:
    route = {"endpoint": "e", "mode": "bidi", "converse": {"sessions": True}}
    with pytest.raises(ConfigError) as caught:
        load_settings(overrides={"routes": {"r": route}})
    assert caught.value.problems[0].startswith(
        "routes.r: Value error, converse.sessions does not apply to mode bidi"
    )
