"""InvokeEndpointWithResponseStream conformance, including mid-stream faults and disconnects."""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from botocore.eventstream import EventStreamBuffer
from botocore.exceptions import ClientError, EventStreamError

from sagewire.emulator import Fault, RunningEmulator

if TYPE_CHECKING:
    from emulator.conftest import Eventually

WORDS = [f"w{i}" for i in range(30)]
EXPECTED_LINES = [
    *({"token": word, "index": i} for i, word in enumerate(WORDS)),
    {"done": True, "count": len(WORDS)},
]


async def read_into(received: list[bytes], response: Any) -> None:
    """Append each PayloadPart's bytes to ``received`` until the stream ends or raises."""
    async for event in response["Body"]:
        received.append(event["PayloadPart"]["Bytes"])


async def stream(client: Any, endpoint: str, body: bytes | str, **kwargs: Any) -> Any:
    return await client.invoke_endpoint_with_response_stream(
        EndpointName=endpoint, Body=body, **kwargs
    )


async def collect(response: Any) -> list[bytes]:
    return [event["PayloadPart"]["Bytes"] async for event in response["Body"]]


async def test_tokens_reassemble_exactly_and_parts_ignore_line_boundaries(
    client: Any, emulator: RunningEmulator
) -> None:
    response = await stream(client, "tokens", json.dumps({"text": " ".join(WORDS)}))
    assert response["ContentType"] == "application/jsonlines"
    assert response["InvokedProductionVariant"] == "AllTraffic"
    assert response["ResponseMetadata"]["HTTPHeaders"]["transfer-encoding"] == "chunked"
    parts = await collect(response)
    text = b"".join(parts).decode()
    assert [json.loads(line) for line in text.splitlines()] == EXPECTED_LINES
    assert any(not part.endswith(b"\n") for part in parts[:-1]), "no part splits a line"
    assert any(part.count(b"\n") >= 2 for part in parts), "no part packs several lines"
    assert [len(p) for p in parts[:4]] == [7, 40, 3, 64]
    stats = emulator.stats("tokens")
    assert (stats.streams_started, stats.streams_completed, stats.active_streams) == (1, 1, 0)
    assert stats.stream_parts_sent == len(parts)


async def test_first_token_is_not_held_back_by_delay(client: Any) -> None:
    # 1.5 s between words: the bound on the first token includes the call's setup and leaves
    # a loaded machine room, yet a first token held back by one delay would miss it.
    started = time.monotonic()
    response = await stream(client, "tokens", json.dumps({"text": "a b c", "delay_ms": 1500}))
    events = aiter(response["Body"])
    first = b""
    while b"\n" not in first:
        first += (await anext(events))["PayloadPart"]["Bytes"]
    assert json.loads(first.split(b"\n")[0]) == {"token": "a", "index": 0}
    assert time.monotonic() - started < 1.5
    rest = [event["PayloadPart"]["Bytes"] async for event in events]
    assert time.monotonic() - started >= 3.0
    assert b"".join([first, *rest]).count(b"\n") == 4


async def test_echo_stream_sends_body_in_parts_with_headers(client: Any) -> None:
    body = bytes(range(256)) * 40  # 10240 bytes -> 4096 + 4096 + 2048
    response = await stream(
        client, "echo", body, ContentType="application/x-demo", Accept="x/y", TargetVariant="B"
    )
    assert response["ContentType"] == "application/x-demo"
    assert response["InvokedProductionVariant"] == "B"
    parts = await collect(response)
    assert [len(p) for p in parts] == [4096, 4096, 2048]
    assert b"".join(parts) == body


async def test_stream_refuses_new_session(client: Any) -> None:
    with pytest.raises(ClientError) as caught:
        await stream(client, "echo", b"x", SessionId="NEW_SESSION")
    assert caught.value.response["Error"]["Code"] == "ValidationError"


async def test_stream_errors_before_first_event_are_http_errors(client: Any) -> None:
    with pytest.raises(ClientError) as caught:
        await stream(client, "nope", b"x")
    assert caught.value.response["Error"]["Code"] == "ValidationError"
    with pytest.raises(ClientError) as caught:
        await stream(client, "tokens", b"not json")
    assert caught.value.response["Error"]["Code"] == "ModelError"
    assert caught.value.response["OriginalStatusCode"] == 400


@pytest.mark.parametrize(
    ("fault", "code", "message"),
    [
        (
            Fault(stream_error_after_parts=3, stream_error_code="StreamBroken"),
            "ModelStreamError",
            "Injected stream error.",
        ),
        (
            Fault(stream_error_after_parts=3, message="too slow"),
            "ModelStreamError",
            "too slow",
        ),
        (
            Fault(stream_error_after_parts=3, stream_error="internal_stream_failure"),
            "InternalStreamFailure",
            "Injected stream error.",
        ),
    ],
)
async def test_mid_stream_errors_surface_as_event_stream_errors(
    client: Any, emulator: RunningEmulator, fault: Fault, code: str, message: str
) -> None:
    emulator.set_fault("tokens", fault)
    response = await stream(client, "tokens", json.dumps({"text": " ".join(WORDS)}))
    received: list[bytes] = []
    with pytest.raises(EventStreamError) as caught:
        await read_into(received, response)
    assert caught.value.response["Error"] == {"Code": code, "Message": message}
    assert len(received) == 3
    stats = emulator.stats("tokens")
    assert (stats.stream_parts_sent, stats.streams_failed, stats.streams_completed) == (3, 1, 0)


@pytest.mark.parametrize("code", ["ModelInvocationTimeExceeded", "StreamBroken"])
async def test_model_stream_error_code_on_the_wire(emulator: RunningEmulator, code: Any) -> None:
    """botocore only surfaces Code and Message; ErrorCode is checked on the raw frames."""
    emulator.set_fault("echo", Fault(stream_error_after_parts=1, stream_error_code=code))
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{emulator.url}/endpoints/echo/invocations-response-stream", data=b"hi") as r,
    ):
        assert r.headers["Content-Type"] == "application/vnd.amazon.eventstream"
        buffer = EventStreamBuffer()
        buffer.add_data(await r.read())
        part, error = list(buffer)
    assert part.payload == b"hi"
    assert error.headers[":exception-type"] == "ModelStreamError"
    assert json.loads(error.payload)["ErrorCode"] == code


async def test_part_delay_slows_every_part(client: Any, emulator: RunningEmulator) -> None:
    emulator.set_fault("tokens", Fault(part_delay_ms=40))
    started = time.monotonic()
    parts = await collect(await stream(client, "tokens", json.dumps({"text": "a b c d"})))
    assert time.monotonic() - started >= 0.04 * len(parts)
    assert b"".join(parts).count(b"\n") == 5


async def test_drop_after_parts_cuts_the_connection(
    client: Any, emulator: RunningEmulator, eventually: Eventually
) -> None:
    emulator.set_fault("tokens", Fault(drop_after_parts=2))
    response = await stream(client, "tokens", json.dumps({"text": " ".join(WORDS)}))
    received: list[bytes] = []
    # aiobotocore lets aiohttp's error through (sync botocore would raise ResponseStreamingError).
    with pytest.raises(aiohttp.ClientPayloadError):
        await read_into(received, response)
    response["Body"].close()  # aiobotocore leaves the broken connection to the caller
    assert len(received) == 2
    stats = emulator.stats("tokens")
    await eventually(lambda: stats.active_streams == 0)
    assert (stats.streams_dropped, stats.streams_aborted, stats.stream_parts_sent) == (1, 0, 2)


async def test_client_disconnect_stops_the_model(
    client: Any, emulator: RunningEmulator, eventually: Eventually
) -> None:
    # 500 words 100 ms apart (50 s): the model is still far from done whenever the disconnect
    # is noticed, on a loaded machine too.
    words = " ".join(f"w{i}" for i in range(500))
    response = await stream(client, "tokens", json.dumps({"text": words, "delay_ms": 100}))
    events = aiter(response["Body"])
    for _ in range(4):
        await anext(events)
    stats = emulator.stats("tokens")
    assert stats.active_streams == 1
    response["Body"].close()  # the caller goes away mid-stream
    await eventually(lambda: stats.streams_aborted == 1)
    assert stats.active_streams == 0
    sent = stats.stream_parts_sent
    await asyncio.sleep(0.5)  # 5 word delays: a live model would have sent more parts
    assert stats.stream_parts_sent == sent
    assert sent < 100
    assert (stats.streams_completed, stats.streams_failed) == (0, 0)


async def test_disconnect_during_a_stall_is_noticed(
    client: Any, emulator: RunningEmulator, eventually: Eventually
) -> None:
    emulator.set_fault("tokens", Fault(stall_after_parts=2))
    response = await stream(client, "tokens", json.dumps({"text": " ".join(WORDS)}))
    events = aiter(response["Body"])
    await anext(events)
    await anext(events)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anext(events), 0.3)
    stats = emulator.stats("tokens")
    assert (stats.active_streams, stats.stream_parts_sent) == (1, 2)
    response["Body"].close()
    await eventually(lambda: stats.streams_aborted == 1)
    assert stats.active_streams == 0
