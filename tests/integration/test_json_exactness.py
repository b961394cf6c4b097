"""The `json` view never differs from `body`, and a caller's `json` is sent by one rule, on
every RPC that carries one: grpc.aio → sagewire → aioboto3 → the emulator's echo model.

The reported instance: a model answering {"id": 9223372036854775807, "near53":
9007199254740993} got `json` showing 9.223372036854776e+18 and 9007199254740992.0.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf import json_format, struct_pb2
from google.rpc import error_details_pb2

from sagewire.emulator.server import RunningEmulator
from sagewire.v1 import async_jobs_pb2, converse_pb2, invoke_pb2
from support import BOTH_AWS_CLIENTS, Sagewire, failure, start_sagewire

pytestmark = BOTH_AWS_CLIENTS

PINNED = b'{"id": 9223372036854775807, "near53": 9007199254740993}'
EXACT = b'{"id": 9007199254740992, "p": 0.1, "big": 1e300}'
JSON = "application/json"

ROUTES: dict[str, dict[str, Any]] = {
    "echo": {"endpoint": "echo"},
    "echo-lines": {"endpoint": "echo", "mode": "stream", "framing": "lines"},
}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def server(emulator: RunningEmulator, aws_client: str) -> AsyncIterator[Sagewire]:
    async with start_sagewire(emulator.url, routes=ROUTES, aws={"client": aws_client}) as sw:
        yield sw


def _value(doc: Any) -> struct_pb2.Value:
    return json_format.ParseDict(doc, struct_pb2.Value())


async def test_invoke_leaves_json_unset_when_a_number_would_change(server: Sagewire) -> None:
    response = await server.inference.Invoke(
        invoke_pb2.InvokeRequest(model="echo", body=PINNED, content_type=JSON)
    )
    assert response.body == PINNED
    assert response.content_type == JSON
    assert not response.HasField("json")
    exact = await server.inference.Invoke(
        invoke_pb2.InvokeRequest(model="echo", body=EXACT, content_type=JSON)
    )
    assert json_format.MessageToDict(exact.json) == json.loads(EXACT)


async def test_invoke_stream_lines_leave_json_unset_per_record(server: Sagewire) -> None:
    body = PINNED + b"\n" + EXACT + b"\n"
    call = server.inference.InvokeStream(
        invoke_pb2.InvokeStreamRequest(model="echo-lines", body=body, content_type=JSON)
    )
    messages = [m async for m in call]
    assert [m.body for m in messages] == [PINNED + b"\n", EXACT + b"\n"]
    assert not messages[0].HasField("json")
    assert json_format.MessageToDict(messages[1].json) == json.loads(EXACT)


@pytest.mark.parametrize("model", ["echo", "echo-lines"])
async def test_converse_chunks_leave_json_unset(server: Sagewire, model: str) -> None:
    async def requests() -> AsyncIterator[converse_pb2.ConverseRequest]:
        yield converse_pb2.ConverseRequest(
            open=converse_pb2.ConverseOpen(model=model, content_type=JSON)
        )
        for turn_id, body in (("pinned", PINNED), ("exact", EXACT)):
            yield converse_pb2.ConverseRequest(
                turn=converse_pb2.ConverseTurn(turn_id=turn_id, body=body)
            )

    chunks = {
        r.chunk.turn_id: r.chunk
        async for r in server.inference.Converse(requests(), timeout=30)
        if r.WhichOneof("kind") == "chunk"
    }
    assert chunks["pinned"].body.rstrip(b"\n") == PINNED
    assert not chunks["pinned"].HasField("json")
    assert json_format.MessageToDict(chunks["exact"].json) == json.loads(EXACT)


async def test_async_result_leaves_json_unset(async_sagewire: Sagewire) -> None:
    for body, exact in ((PINNED, False), (EXACT, True)):
        job = (
            await async_sagewire.inference.SubmitAsync(
                async_jobs_pb2.SubmitAsyncRequest(model="echo-async", body=body, content_type=JSON)
            )
        ).job
        watch = async_sagewire.inference.WatchAsync(
            async_jobs_pb2.WatchAsyncRequest(job_id=job.job_id), timeout=20
        )
        states = [u.state async for u in watch]
        assert states[-1] == async_jobs_pb2.ASYNC_STATE_COMPLETED
        result = await async_sagewire.inference.GetAsyncResult(
            async_jobs_pb2.GetAsyncResultRequest(job_id=job.job_id)
        )
        assert result.body == body
        assert result.content_type == JSON
        assert result.HasField("json") is exact


# -- what callers send ----------------------------------------------------------------------


async def test_integral_numbers_within_2_53_reach_the_model_as_integers(server: Sagewire) -> None:
    response = await server.inference.Invoke(
        invoke_pb2.InvokeRequest(model="echo", json=_value({"n": 2**53, "m": -20, "x": 0.5}))
    )
    assert json.loads(response.body) == {"n": 9007199254740992, "m": -20, "x": 0.5}
    assert b".0" not in response.body  # 9007199254740992 and -20, not 9007199254740992.0


def _with_json(kind: str, doc_value: struct_pb2.Value) -> Any:
    if kind == "Invoke":
        return invoke_pb2.InvokeRequest(model="echo", json=doc_value)
    if kind == "InvokeStream":
        return invoke_pb2.InvokeStreamRequest(model="echo-lines", json=doc_value)
    return async_jobs_pb2.SubmitAsyncRequest(model="echo-async", json=doc_value)


async def _call(sw: Sagewire, rpc: str, request: Any) -> None:
    if rpc == "InvokeStream":
        [m async for m in sw.inference.InvokeStream(request)]
    else:
        await getattr(sw.inference, rpc)(request)


def _big() -> struct_pb2.Value:
    return _value({"id": 9223372036854775807})


@pytest.mark.parametrize("make", [_big, struct_pb2.Value], ids=["beyond-2^53", "no-kind"])
@pytest.mark.parametrize("rpc", ["Invoke", "InvokeStream", "SubmitAsync"])
async def test_refused_json_names_the_field(
    server: Sagewire, async_sagewire: Sagewire, rpc: str, make: Any
) -> None:
    request = _with_json(rpc, make())
    sw = async_sagewire if rpc == "SubmitAsync" else server
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _call(sw, rpc, request)
    f = failure(caught.value)
    assert f.code is grpc.StatusCode.INVALID_ARGUMENT
    assert f.message.startswith("json: json")
    assert [v.field for v in f.detail(error_details_pb2.BadRequest).field_violations] == ["json"]


@pytest.mark.parametrize("make", [_big, struct_pb2.Value], ids=["beyond-2^53", "no-kind"])
async def test_converse_turn_with_refused_json_fails_in_band(server: Sagewire, make: Any) -> None:
    async def requests() -> AsyncIterator[converse_pb2.ConverseRequest]:
        yield converse_pb2.ConverseRequest(open=converse_pb2.ConverseOpen(model="echo"))
        yield converse_pb2.ConverseRequest(
            turn=converse_pb2.ConverseTurn(turn_id="bad", json=make())
        )
        yield converse_pb2.ConverseRequest(
            turn=converse_pb2.ConverseTurn(turn_id="good", json=_value({"ok": 1}))
        )

    received = [r async for r in server.inference.Converse(requests(), timeout=30)]
    errors = [r.turn_error for r in received if r.WhichOneof("kind") == "turn_error"]
    assert [e.turn_id for e in errors] == ["bad"]
    assert errors[0].status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert errors[0].status.message.startswith("json: json")
    chunks = [r.chunk for r in received if r.WhichOneof("kind") == "chunk"]
    assert [(c.turn_id, c.body) for c in chunks] == [("good", b'{"ok":1}')]
