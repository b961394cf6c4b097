"""Endpoint statuses for ModelService, cached briefly so listing models never hammers the
control plane, and bounded in time so a slow control plane never slows ListModels down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Protocol

UNKNOWN = "Unknown"
# A lookup that takes longer than this answers "Unknown" (and is not cached).
LOOKUP_TIMEOUT_S = 1.0


class EndpointStatusPort(Protocol):
    async def endpoint_status(self, endpoint: str) -> str: ...


class EndpointStatuses:
    """`of(endpoints)` → status per endpoint; each status is reused for `ttl_s` seconds."""

    def __init__(self, source: EndpointStatusPort | None, ttl_s: float) -> None:
        self._source = source
        self._ttl = ttl_s
        self._cache: dict[str, tuple[float, str]] = {}

    async def _one(self, endpoint: str) -> str:
        cached = self._cache.get(endpoint)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        assert self._source is not None
        try:
            async with asyncio.timeout(LOOKUP_TIMEOUT_S):
                status = await self._source.endpoint_status(endpoint)
        except TimeoutError:
            return UNKNOWN
        self._cache[endpoint] = (now, status)
        return status

    async def of(self, endpoints: Iterable[str]) -> dict[str, str]:
        names = sorted(set(endpoints))
        if self._source is None or self._ttl <= 0:
            return dict.fromkeys(names, UNKNOWN)
        statuses = await asyncio.gather(*(self._one(name) for name in names))
        return dict(zip(names, statuses, strict=True))
