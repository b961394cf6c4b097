"""`sse` framing end to end: grpc.aio → sagewire → aioboto3 → the emulator's `sse-tokens`
model, which streams Server-Sent Events like TGI, vLLM and the LMI containers, cut into odd
PayloadParts (events, CRLFs and multi-byte characters split across parts)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from google.protobuf import json_format

from sagewire.emulator.server import RunningEmulator
from sagewire.v1 import common_pb2, converse_pb2, invoke_pb2
from support import BOTH_AWS_CLIENTS, Sagewire, start_sagewire

pytestmark = BOTH_AWS_CLIENTS

TEXT = "héllo wide 世界 🙂"
WORDS = TEXT.split()
ROUTES: dict[str, dict[str, Any]] = {
    "sse": {"endpoint": "sse-tokens", "mode": "stream", "framing": "sse", "allow": ["framing"]},
}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def server(emulator: RunningEmulator, aws_client: str) -> AsyncIterator[Sagewire]:
    async with start_sagewire(emulator.url, routes=ROUTES, aws={"client": aws_client}) as sw:
        yield sw


def _expected() -> list[Any]:
    tokens = [{"token": {"id": i, "text": w}, "generated_text": None} for i, w in enumerate(WORDS)]
    return [*tokens, {"token": None, "generated_text": TEXT}]


async def test_invoke_stream_sends_one_message_per_event_with_json(server: Sagewire) -> None:
    call = server.inference.InvokeStream(
        invoke_pb2.InvokeStreamRequest(model="sse", body=json.dumps({"text": TEXT}).encode())
    )
    messages = [m async for m in call]
    metadata = dict(await call.initial_metadata())
    assert metadata["sagewire-content-type"] == "text/event-stream"
    assert [m.index for m in messages] == list(range(len(WORDS) + 1))
    assert [json.loads(m.body) for m in messages] == _expected()
    assert [json_format.MessageToDict(m.json) for m in messages] == _expected()
    assert b"data:" not in b"".join(m.body for m in messages)


async def test_raw_framing_shows_the_events_as_sent(server: Sagewire) -> None:
    call = server.inference.InvokeStream(
        invoke_pb2.InvokeStreamRequest(
            model="sse",
            body=json.dumps({"text": TEXT}).encode(),
            framing=common_pb2.FRAMING_RAW,
        )
    )
    raw = b"".join([m.body async for m in call])
    assert raw.startswith(b": sagewire emulator\n\n")
    assert raw.endswith(b"data: [DONE]\n\n")


async def test_converse_turns_get_one_chunk_per_event(server: Sagewire) -> None:
    async def requests() -> AsyncIterator[converse_pb2.ConverseRequest]:
        yield converse_pb2.ConverseRequest(open=converse_pb2.ConverseOpen(model="sse"))
        yield converse_pb2.ConverseRequest(
            turn=converse_pb2.ConverseTurn(turn_id="t1", body=json.dumps({"text": TEXT}).encode())
        )

    received = [r async for r in server.inference.Converse(requests(), timeout=30)]
    chunks = [r.chunk for r in received if r.WhichOneof("kind") == "chunk"]
    assert [json_format.MessageToDict(c.json) for c in chunks] == _expected()
    [end] = [r.turn_end for r in received if r.WhichOneof("kind") == "turn_end"]
    assert end.chunk_count == len(WORDS) + 1
