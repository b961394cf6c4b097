"""Endpoint status lookups: cached for the TTL, bounded in time, off when asked."""

from __future__ import annotations

import asyncio

import pytest

from sagewire.core import endpoint_status
from sagewire.core.endpoint_status import EndpointStatuses, SourceFactory


class Source:
    """Answers from a table and counts how often it was asked."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.asked: list[str] = []
        self.delay_s = delay_s
        self.opened = 0

    async def endpoint_status(self, endpoint: str) -> str:
        self.asked.append(endpoint)
        await asyncio.sleep(self.delay_s)
        return {"a": "InService", "b": "Creating"}.get(endpoint, "NotFound")


def opener(source: Source) -> SourceFactory:
    async def open_source() -> Source:
        source.opened += 1
        return source

    return open_source


async def test_statuses_are_looked_up_once_per_ttl() -> None:
    source = Source()
    statuses = EndpointStatuses(opener(source), ttl_s=60)
    assert await statuses.of(["a", "b", "a", "zz"]) == {
        "a": "InService",
        "b": "Creating",
        "zz": "NotFound",
    }
    assert await statuses.of(["a"]) == {"a": "InService"}
    assert sorted(source.asked) == ["a", "b", "zz"]
    assert source.opened == 1  # one client, opened on first use


async def test_a_zero_ttl_or_no_source_means_unknown_without_asking() -> None:
    source = Source()
    assert await EndpointStatuses(opener(source), ttl_s=0).of(["a"]) == {"a": "Unknown"}
    assert await EndpointStatuses(None, ttl_s=15).of(["a"]) == {"a": "Unknown"}
    assert source.asked == []
    assert source.opened == 0


async def test_a_slow_control_plane_answers_unknown_in_bounded_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(endpoint_status, "LOOKUP_TIMEOUT_S", 0.05)
    statuses = EndpointStatuses(opener(Source(delay_s=5)), ttl_s=60)
    async with asyncio.timeout(1):
        assert await statuses.of(["a"]) == {"a": "Unknown"}
