"""Fronting a real model container (SageMaker container contract) on loopback."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError, EventStreamError

from sagewire.emulator import RunningEmulator

if TYPE_CHECKING:
    from emulator.conftest import Eventually, FakeContainer


async def read_into(received: list[bytes], response: Any) -> None:
    """Append each PayloadPart's bytes to ``received`` until the stream ends or raises."""
    async for event in response["Body"]:
        received.append(event["PayloadPart"]["Bytes"])


async def test_realtime_forwards_headers_and_returns_the_container_answer(
    client: Any, container: FakeContainer, emulator: RunningEmulator
) -> None:
    # Only session ids the endpoint's model opened get through (see test_sessions.py).
    emulator.sessions("container").learn("sess-1")
    response = await client.invoke_endpoint(
        EndpointName="container",
        Body=b"payload",
        ContentType="text/csv",
        Accept="application/json",
        CustomAttributes="k=v",
        TargetModel="m.tar.gz",
        SessionId="sess-1",
    )
    answer = json.loads(await response["Body"].read())
    assert answer["body"] == "payload"
    assert answer["headers"] == {
        "Content-Type": "text/csv",
        "Accept": "application/json",
        "X-Amzn-SageMaker-Custom-Attributes": "k=v",
        "X-Amzn-SageMaker-Target-Model": "m.tar.gz",
        "X-Amzn-SageMaker-Session-Id": "sess-1",
    }
    assert response["ContentType"].startswith("application/json")
    assert response["CustomAttributes"] == "seen=yes"
    assert emulator.stats("container").invocations == 1


async def test_container_error_becomes_model_error(client: Any) -> None:
    with pytest.raises(ClientError) as caught:
        await client.invoke_endpoint(
            EndpointName="container", Body=b"x", CustomAttributes="mode=error"
        )
    response = caught.value.response
    assert response["Error"]["Code"] == "ModelError"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert response["OriginalStatusCode"] == 400
    assert response["OriginalMessage"] == "container rejects this input"


async def test_unreachable_container_is_a_model_error(client: Any) -> None:
    with pytest.raises(ClientError) as caught:
        await client.invoke_endpoint(EndpointName="container-down", Body=b"x")
    response = caught.value.response
    assert response["Error"]["Code"] == "ModelError"
    assert "could not reach the model container" in response["OriginalMessage"]
    assert "OriginalStatusCode" not in response


async def test_stream_relays_container_chunks_as_parts(
    client: Any, container: FakeContainer
) -> None:
    response = await client.invoke_endpoint_with_response_stream(
        EndpointName="container",
        Body=json.dumps({"count": 5, "delay_ms": 5}),
        CustomAttributes="mode=stream",
        Accept="text/plain",
    )
    assert response["ContentType"] == "text/plain"
    parts = [event["PayloadPart"]["Bytes"] async for event in response["Body"]]
    assert b"".join(parts) == b"".join(f"line-{i}\n".encode() for i in range(5))
    assert len(parts) >= 2  # relayed as the chunks arrived, not buffered into one
    assert container.requests[-1]["Accept"] == "text/plain"  # from X-Amzn-SageMaker-Accept


async def test_stream_container_error_is_an_http_model_error(client: Any) -> None:
    with pytest.raises(ClientError) as caught:
        await client.invoke_endpoint_with_response_stream(
            EndpointName="container", Body=b"x", CustomAttributes="mode=error"
        )
    assert caught.value.response["Error"]["Code"] == "ModelError"
    assert caught.value.response["OriginalStatusCode"] == 400


async def test_disconnect_closes_the_upstream_container_stream(
    client: Any, container: FakeContainer, emulator: RunningEmulator, eventually: Eventually
) -> None:
    response = await client.invoke_endpoint_with_response_stream(
        EndpointName="container",
        Body=json.dumps({"count": 1000, "delay_ms": 10}),
        CustomAttributes="mode=stream",
    )
    events = aiter(response["Body"])
    await anext(events)
    await anext(events)
    response["Body"].close()
    await eventually(lambda: container.streams_cancelled == 1)
    stats = emulator.stats("container")
    assert (stats.streams_aborted, stats.active_streams) == (1, 0)


async def test_container_that_does_not_answer_in_time_is_a_model_timeout(client: Any) -> None:
    with pytest.raises(ClientError) as caught:
        await client.invoke_endpoint(
            EndpointName="container-impatient", Body=b"x", CustomAttributes="mode=hang"
        )
    response = caught.value.response
    assert response["Error"]["Code"] == "ModelError"
    assert "did not respond within 60 seconds" in response["Error"]["Message"]


async def test_container_breaking_mid_stream_is_a_stream_broken_event(
    client: Any, emulator: RunningEmulator
) -> None:
    response = await client.invoke_endpoint_with_response_stream(
        EndpointName="container", Body=b"x", CustomAttributes="mode=break"
    )
    received: list[bytes] = []
    with pytest.raises(EventStreamError) as caught:
        await read_into(received, response)
    assert caught.value.response["Error"]["Code"] == "ModelStreamError"
    assert "container stream broke" in caught.value.response["Error"]["Message"]
    assert b"".join(received) == b"partial-1\npartial-2\n"
    assert emulator.stats("container").streams_failed == 1
