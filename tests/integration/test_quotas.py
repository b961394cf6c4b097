"""Per-caller quotas: requests per second and calls in flight, per principal and per
principal × route; past them RESOURCE_EXHAUSTED with QuotaFailure and RetryInfo. And the
fairness they buy: one caller flooding a route cannot starve another (measured: the other
caller's success rate, with and without the per-caller-route bound)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest
from auth_support import API_KEY_LINES, BATCH_KEY, READER_KEY, api_key, invoke, invoke_failure
from google.rpc import error_details_pb2

from sagewire.emulator.faults import Fault
from sagewire.emulator.server import RunningEmulator
from support import failure, settings_for, start_sagewire

pytestmark = pytest.mark.asyncio(loop_scope="session")

ROUTES: dict[str, dict[str, Any]] = {
    "echo": {"endpoint": "echo", "callers": ["*"]},
    # Slow calls (latency set per test on the emulator's "faulty" endpoint), four in flight.
    "slow": {"endpoint": "faulty", "max_concurrency": 4, "timeout_s": 30, "callers": ["*"]},
}


def _auth(tmp_path: Path) -> dict[str, Any]:
    keys = tmp_path / "api-keys"
    keys.write_text(API_KEY_LINES)
    return {"api_keys": {"file": str(keys)}}


async def test_rate_quota_per_caller(emulator: RunningEmulator, tmp_path: Path) -> None:
    quotas = {"per_caller": {"rps": 1, "burst": 2}}
    settings = settings_for(emulator, routes=ROUTES, auth=_auth(tmp_path), quotas=quotas)
    async with start_sagewire(emulator, settings) as sw:
        assert await invoke(sw.channel, api_key(BATCH_KEY))
        assert await invoke(sw.channel, api_key(BATCH_KEY))
        refused = await invoke_failure(sw.channel, api_key(BATCH_KEY))
        # The other caller has its own bucket.
        assert await invoke(sw.channel, api_key(READER_KEY))
    assert refused.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused.reason == "QUOTA_EXCEEDED"
    violation = refused.detail(error_details_pb2.QuotaFailure).violations[0]
    assert violation.subject == "key:batch"
    assert violation.description == "your quota allows 1 requests per second"
    delay = refused.detail(error_details_pb2.RetryInfo).retry_delay
    assert 0 < delay.ToNanoseconds() <= 1_000_000_000


async def _flood_then_other(sw: Any, refusals: int) -> tuple[list[str], list[str]]:
    """Caller A sends 8 concurrent slow calls; once the `refusals` of A's calls that could not
    start have come back (the others are then in flight for seconds), caller B sends 2.
    Outcomes per call: "OK" or the refusal's reason."""
    refused = 0
    all_refused = asyncio.Event()

    async def outcome(key: str) -> str:
        nonlocal refused
        try:
            await invoke(sw.channel, api_key(key), model="slow")
            return "OK"
        except grpc.aio.AioRpcError as error:
            refused += 1
            if refused == refusals:
                all_refused.set()
            return failure(error).reason

    flood = [asyncio.create_task(outcome(BATCH_KEY)) for _ in range(8)]
    async with asyncio.timeout(30):
        await all_refused.wait()
    other = await asyncio.gather(*(outcome(READER_KEY) for _ in range(2)))
    return list(await asyncio.gather(*flood)), list(other)


async def test_one_caller_cannot_starve_another(emulator: RunningEmulator, tmp_path: Path) -> None:
    emulator.set_fault("faulty", Fault(latency_ms=3000))
    # Control: no per-caller bound. The flood takes all four route slots.
    settings = settings_for(emulator, routes=ROUTES, auth=_auth(tmp_path))
    async with start_sagewire(emulator, settings) as sw:
        flood, other = await _flood_then_other(sw, 4)
    assert sorted(flood) == ["OK"] * 4 + ["ROUTE_CONCURRENCY_LIMIT"] * 4
    assert other == ["ROUTE_CONCURRENCY_LIMIT"] * 2  # B: 0 % success

    # With two calls in flight per caller and route, the flood keeps two slots at most.
    quotas = {"per_caller_route": {"max_concurrency": 2}}
    settings = settings_for(emulator, routes=ROUTES, auth=_auth(tmp_path), quotas=quotas)
    async with start_sagewire(emulator, settings) as sw:
        flood, other = await _flood_then_other(sw, 6)
        # The slots come back when the calls end.
        assert await invoke(sw.channel, api_key(BATCH_KEY), model="slow")
    assert sorted(flood) == ["OK"] * 2 + ["QUOTA_EXCEEDED"] * 6
    assert other == ["OK"] * 2  # B: 100 % success
