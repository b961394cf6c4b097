"""Faults changed on a running emulator over HTTP (the way a `make run` user does), seen by a
plain aioboto3 client."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from botocore.exceptions import BotoCoreError, ClientError

from sagewire.emulator import Fault, RunningEmulator
from sagewire.emulator.fault_run import ActiveFault


async def test_a_fault_put_over_http_applies_to_the_next_call_and_deletes(
    client: Any, emulator: RunningEmulator
) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.put(
            f"{emulator.url}/_emulator/faults/echo", json={"error": "throttling"}
        ) as put:
            assert put.status == 200
            assert await put.json() == {"error": "throttling"}
        with pytest.raises(ClientError) as caught:
            await client.invoke_endpoint(EndpointName="echo", Body=b"hi")
        assert caught.value.response["Error"]["Code"] == "ThrottlingException"
        async with http.get(f"{emulator.url}/_emulator/faults") as listed:
            faults = await listed.json()
        assert faults["echo"] == {"error": "throttling"}
        assert faults["model-error"]["error"] == "model_error"  # configured ones show too
        async with http.delete(f"{emulator.url}/_emulator/faults/echo") as deleted:
            assert deleted.status == 200
        answer = await client.invoke_endpoint(EndpointName="echo", Body=b"hi")
        assert await answer["Body"].read() == b"hi"


async def test_reset_restores_the_configured_faults(client: Any, emulator: RunningEmulator) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.delete(f"{emulator.url}/_emulator/faults/model-error") as healed:
            assert healed.status == 200
        answer = await client.invoke_endpoint(EndpointName="model-error", Body=b"ok")
        assert await answer["Body"].read() == b"ok"
        async with http.post(f"{emulator.url}/_emulator/reset") as reset:
            assert reset.status == 200
    with pytest.raises(ClientError) as caught:
        await client.invoke_endpoint(EndpointName="model-error", Body=b"ok")
    assert caught.value.response["Error"]["Code"] == "ModelError"


async def test_bad_requests_say_what_is_wrong(emulator: RunningEmulator) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.put(
            f"{emulator.url}/_emulator/faults/echo", json={"eror": "throttling"}
        ) as typo:
            assert typo.status == 400
            assert "eror" in (await typo.json())["error"]
        async with http.put(f"{emulator.url}/_emulator/faults/ghost", json={}) as unknown:
            assert unknown.status == 404
            assert "ghost" in (await unknown.json())["error"]


async def _put(url: str, endpoint: str, fault: dict[str, object]) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.put(f"{url}/_emulator/faults/{endpoint}", json=fault) as put,
    ):
        assert put.status == 200, await put.text()
        assert await put.json() == fault


async def _code(client: Any, endpoint: str = "echo") -> str:
    """The call's botocore error code, or "ok"."""
    try:
        answer = await client.invoke_endpoint(EndpointName=endpoint, Body=b"hi")
    except ClientError as error:
        return str(error.response["Error"]["Code"])
    assert await answer["Body"].read() == b"hi"
    return "ok"


async def test_cold_for_calls_then_ready_counted_from_the_put(
    client: Any, emulator: RunningEmulator
) -> None:
    assert await _code(client) == "ok"  # calls before the PUT do not count
    await _put(emulator.url, "echo", {"cold_for_calls": 2})
    assert [await _code(client) for _ in range(3)] == [
        "ModelNotReadyException",
        "ModelNotReadyException",
        "ok",
    ]
    stats = emulator.stats("echo")
    assert (stats.cold_answers, stats.faults_injected, stats.errors) == (2, 2, 2)


async def test_cold_for_seconds_is_not_ready_then_serves(
    client: Any, emulator: RunningEmulator
) -> None:
    await _put(emulator.url, "echo", {"cold_for_s": 600})
    with pytest.raises(ClientError) as caught:
        await client.invoke_endpoint(EndpointName="echo", Body=b"hi")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert caught.value.response["Error"]["Code"] == "ModelNotReadyException"
    # A short window: the endpoint wakes up by itself (polling, the machine may be slow).
    await _put(emulator.url, "echo", {"cold_for_s": 0.3})
    codes = [await _code(client)]
    while codes[-1] != "ok" and len(codes) < 400:
        await asyncio.sleep(0.05)
        codes.append(await _code(client))
    assert codes[-1] == "ok"
    assert set(codes[:-1]) <= {"ModelNotReadyException"}


async def test_a_seeded_error_rate_fails_exactly_the_predicted_calls(
    client: Any, emulator: RunningEmulator
) -> None:
    fault = {"error": "service_unavailable", "error_rate": 0.5, "seed": 11}
    predicted = ActiveFault(Fault.model_validate(fault))
    expected = ["ServiceUnavailable" if predicted.decide().error else "ok" for _ in range(30)]
    assert 5 < expected.count("ok") < 25  # the seed gives a real mix
    await _put(emulator.url, "echo", fault)
    assert [await _code(client) for _ in range(30)] == expected
    assert emulator.stats("echo").faults_injected == expected.count("ServiceUnavailable")


async def test_latency_distribution_delays_each_call(
    client: Any, emulator: RunningEmulator
) -> None:
    await _put(
        emulator.url,
        "echo",
        {"latency": {"distribution": "uniform", "min_ms": 300.0, "max_ms": 400.0}, "seed": 1},
    )
    for _ in range(3):
        started = time.monotonic()
        assert await _code(client) == "ok"
        assert time.monotonic() - started >= 0.3


@pytest.mark.parametrize("operation", ["invoke", "stream"])
async def test_connection_drop_closes_the_socket_without_an_answer(
    client: Any, emulator: RunningEmulator, operation: str
) -> None:
    await _put(emulator.url, "echo", {"error": "connection_drop"})
    call = (
        client.invoke_endpoint
        if operation == "invoke"
        else client.invoke_endpoint_with_response_stream
    )
    with pytest.raises((aiohttp.ClientError, BotoCoreError)) as caught:
        await call(EndpointName="echo", Body=b"hi")
    assert not isinstance(caught.value, ClientError)  # no HTTP answer at all
    stats = emulator.stats("echo")
    assert (stats.connections_dropped, stats.faults_injected, stats.errors) == (1, 1, 0)
    await _put(emulator.url, "echo", {})
    assert await _code(client) == "ok"  # the emulator itself is fine


async def test_stats_over_http_show_fault_counters_and_nothing_in_flight(
    client: Any, emulator: RunningEmulator
) -> None:
    await _put(emulator.url, "echo", {"cold_for_calls": 1})
    assert await _code(client) == "ModelNotReadyException"
    assert await _code(client) == "ok"
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{emulator.url}/_emulator/stats") as answer,
    ):
        echo = (await answer.json())["echo"]
    assert echo["cold_answers"] == 1
    assert echo["invocations"] == 2
    assert (echo["active_invocations"], echo["active_streams"]) == (0, 0)
