"""Scraping sagewire's /metrics over HTTP and reading it with prometheus-client's parser."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Scrape:
    text: str
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    def value(self, name: str, **labels: str) -> float | None:
        """The sample `name` with exactly these labels, or None when there is none."""
        return self.samples.get((name, frozenset(labels.items())))

    def labelled(self, name: str) -> list[dict[str, str]]:
        """The label sets of every sample called `name`."""
        return [dict(labels) for (sample, labels) in self.samples if sample == name]

    def names(self) -> set[str]:
        return {name for name, _ in self.samples}


def parse(text: str) -> Scrape:
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    return Scrape(text, samples)


async def scrape(url: str) -> Scrape:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200, response.status
        assert response.headers["Content-Type"].startswith("text/plain")
        return parse(await response.text())


async def scrape_until(url: str, ready: Callable[[Scrape], object], within: float = 20) -> Scrape:
    """Scrape until `ready` holds (what a server records after the client has seen the end,
    e.g. a cancellation), for at most `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        found = await scrape(url)
        if ready(found) or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)
