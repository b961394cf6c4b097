"""Faults changed on a running emulator over HTTP (the way a `make run` user does), seen by a
plain aioboto3 client."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from botocore.exceptions import ClientError

from sagewire.emulator import RunningEmulator


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
