"""Endpoint statuses for ModelService, cached briefly so listing models never hammers the
control plane, and bounded in time so a slow control plane never slows ListModels down.

The control-plane client is opened on the first lookup: its service model costs about 15 MB
of memory, which a replica whose callers never ask for model statuses should not pay."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

UNKNOWN = "Unknown"
# A lookup that takes longer than this answers "Unknown" (and is not cached).
LOOKUP_TIMEOUT_S = 1.0


class EndpointStatusPort(Protocol):
    async def endpoint_status(self, endpoint: str) -> str: ...


type SourceFactory = Callable[[], Awaitable[EndpointStatusPort]]


class EndpointStatuses:
    """`of(endpoints)` → status per endpoint; each status is reused for `ttl_s` seconds."""

    def __init__(self, open_source: SourceFactory | None, ttl_s: float) -> None:
        self._open_source = open_source
        self._source: EndpointStatusPort | None = None
        self._opening = asyncio.Lock()
        self._ttl = ttl_s
        self._cache: dict[str, tuple[float, str]] = {}

    async def _get_source(self) -> EndpointStatusPort:
        async with self._opening:
            if self._source is None:
                assert self._open_source is not None
                self._source = await self._open_source()
        return self._source

    async def _one(self, endpoint: str) -> str:
        cached = self._cache.get(endpoint)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        source = await self._get_source()
        try:
            async with asyncio.timeout(LOOKUP_TIMEOUT_S):
                status = await source.endpoint_status(endpoint)
        except TimeoutError:
            return UNKNOWN
        self._cache[endpoint] = (now, status)
        return status

    async def of(self, endpoints: Iterable[str]) -> dict[str, str]:
        names = sorted(set(endpoints))
        if self._open_source is None or self._ttl <= 0:
            return dict.fromkeys(names, UNKNOWN)
        statuses = await asyncio.gather(*(self._one(name) for name in names))
        return dict(zip(names, statuses, strict=True))
