"""The `view` request field over real sockets: FULL (the default) sends `body` and `json`,
BODY sends the bytes alone (no parse, not sent twice), JSON the parsed view alone where it
applies. Every RPC with a `json` answer field (Invoke, InvokeStream, Converse, GetAsyncResult),
the REST bridge's spelling of the same field, and the Python client, which asks for BODY."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf import json_format, struct_pb2
from google.rpc import error_details_pb2

from sagewire.client import AsyncClient
from sagewire.observability import calls
from sagewire.v1 import async_jobs_pb2, common_pb2, converse_pb2, invoke_pb2
from support import Sagewire, failure

type View = common_pb2.ResponseView.ValueType
FULL = common_pb2.RESPONSE_VIEW_FULL
BODY = common_pb2.RESPONSE_VIEW_BODY
JSON = common_pb2.RESPONSE_VIEW_JSON
UNKNOWN = common_pb2.ResponseView.ValueType(7)
DOCUMENT = {"inputs": "hello", "n": 3, "nested": {"ok": True}}


def _field(error: grpc.aio.AioRpcError) -> str:
    bad = failure(error).detail(error_details_pb2.BadRequest)
    return str(bad.field_violations[0].field) if bad is not None else ""


def _value(doc: Any) -> struct_pb2.Value:
    return json_format.ParseDict(doc, struct_pb2.Value())


async def _invoke(sagewire: Sagewire, view: View, **fields: Any) -> invoke_pb2.InvokeResponse:
    request = invoke_pb2.InvokeRequest(model="echo", view=view, **fields)
    if "body" not in fields:
        request.json.CopyFrom(_value(DOCUMENT))
    response: invoke_pb2.InvokeResponse = await sagewire.inference.Invoke(request)
    return response


async def test_invoke_default_and_full_carry_body_and_json(sagewire: Sagewire) -> None:
    for view in (common_pb2.RESPONSE_VIEW_UNSPECIFIED, FULL):
        response = await _invoke(sagewire, view)
        assert json.loads(response.body) == DOCUMENT
        assert json_format.MessageToDict(response.json) == DOCUMENT


async def test_invoke_body_view_sends_the_bytes_alone(sagewire: Sagewire) -> None:
    response = await _invoke(sagewire, BODY)
    assert json.loads(response.body) == DOCUMENT
    assert not response.HasField("json")
    assert response.content_type == "application/json"


async def test_invoke_json_view_sends_the_parsed_answer_alone(sagewire: Sagewire) -> None:
    response = await _invoke(sagewire, JSON)
    assert json_format.MessageToDict(response.json) == DOCUMENT
    assert response.body == b""


async def test_json_view_falls_back_to_body_when_the_view_does_not_apply(
    sagewire: Sagewire,
) -> None:
    # Not JSON at all, and JSON with a number a double cannot hold: `body` as without a view.
    raw = await _invoke(sagewire, JSON, body=b"\x00raw", content_type="application/x-blob")
    assert (raw.body, raw.HasField("json")) == (b"\x00raw", False)
    big = b'{"id":9223372036854775807}'
    exact = await _invoke(sagewire, JSON, body=big, content_type="application/json")
    assert (exact.body, exact.HasField("json")) == (big, False)


async def test_an_unknown_view_is_invalid_argument_naming_the_field(sagewire: Sagewire) -> None:
    calls: dict[str, Awaitable[Any]] = {
        "Invoke": sagewire.inference.Invoke(
            invoke_pb2.InvokeRequest(model="echo", body=b"{}", view=UNKNOWN)
        ),
        "InvokeStream": anext(
            aiter(
                sagewire.inference.InvokeStream(
                    invoke_pb2.InvokeStreamRequest(model="tokens", body=b"{}", view=UNKNOWN)
                )
            )
        ),
        "GetAsyncResult": sagewire.inference.GetAsyncResult(
            async_jobs_pb2.GetAsyncResultRequest(job_id="x", view=UNKNOWN)
        ),
    }
    for name, call in calls.items():
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, name
        assert _field(caught.value) == "view", name


def _stream_request(view: View) -> invoke_pb2.InvokeStreamRequest:
    request = invoke_pb2.InvokeStreamRequest(model="tokens", view=view)
    request.json.CopyFrom(_value({"text": "one two three"}))
    return request


async def test_invoke_stream_views_per_record(sagewire: Sagewire) -> None:
    full = [m async for m in sagewire.inference.InvokeStream(_stream_request(FULL))]
    body = [m async for m in sagewire.inference.InvokeStream(_stream_request(BODY))]
    parsed = [m async for m in sagewire.inference.InvokeStream(_stream_request(JSON))]
    assert [m.body for m in body] == [m.body for m in full]
    assert all(m.HasField("json") for m in full)
    assert not any(m.HasField("json") for m in body)
    assert [m.json for m in parsed] == [m.json for m in full]
    assert all(m.body == b"" for m in parsed)


async def _converse(sagewire: Sagewire, view: View) -> list[converse_pb2.ConverseChunk]:
    turn = converse_pb2.ConverseTurn(turn_id="t1")
    turn.json.CopyFrom(_value({"text": "one two"}))
    done = asyncio.Event()

    async def requests() -> AsyncIterator[converse_pb2.ConverseRequest]:
        yield converse_pb2.ConverseRequest(
            open=converse_pb2.ConverseOpen(model="tokens", view=view)
        )
        yield converse_pb2.ConverseRequest(turn=turn)
        await done.wait()

    chunks = []
    async for response in sagewire.inference.Converse(requests(), timeout=30):
        kind = response.WhichOneof("kind")
        if kind == "chunk":
            chunks.append(response.chunk)
        elif kind == "turn_end":
            done.set()
        else:
            assert kind == "opened", response
    return chunks


async def test_converse_view_applies_to_every_chunk(sagewire: Sagewire) -> None:
    full = await _converse(sagewire, FULL)
    body = await _converse(sagewire, BODY)
    assert full
    assert all(c.HasField("json") and c.body for c in full)
    assert [c.body for c in body] == [c.body for c in full]
    assert not any(c.HasField("json") for c in body)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _converse(sagewire, UNKNOWN)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert _field(caught.value) == "view"


async def test_get_async_result_views(async_sagewire: Sagewire) -> None:
    request = async_jobs_pb2.SubmitAsyncRequest(model="slow-echo")
    request.json.CopyFrom(_value(DOCUMENT))
    job = (await async_sagewire.inference.SubmitAsync(request)).job
    watch = async_sagewire.inference.WatchAsync(
        async_jobs_pb2.WatchAsyncRequest(job_id=job.job_id), timeout=30
    )
    assert [u.state async for u in watch][-1] == async_jobs_pb2.ASYNC_STATE_COMPLETED
    results = {
        view: await async_sagewire.inference.GetAsyncResult(
            async_jobs_pb2.GetAsyncResultRequest(job_id=job.job_id, view=view)
        )
        for view in (FULL, BODY, JSON)
    }
    assert results[FULL].body == results[BODY].body
    assert json.loads(results[BODY].body) == DOCUMENT
    assert json_format.MessageToDict(results[FULL].json) == DOCUMENT
    assert not results[BODY].HasField("json")
    assert results[JSON].json == results[FULL].json
    assert results[JSON].body == b""
    assert results[BODY].output_size == len(results[BODY].body)
    # The REST bridge: the same field as a query parameter (HttpRule: not in the path, no body).
    async with aiohttp.ClientSession() as http:
        url = f"{async_sagewire.rest_url}/v1/jobs/{job.job_id}"
        async with http.get(url, params={"view": "RESPONSE_VIEW_BODY"}) as response:
            answer = await response.json()
        assert response.status == 200, answer
        assert "json" not in answer
        assert answer["body"]
        async with http.get(url, params={"view": "SIDEWAYS"}) as response:
            assert response.status == 400
            assert "view" in (await response.text())


async def test_rest_invoke_takes_the_view_in_its_body(sagewire: Sagewire) -> None:
    url = f"{sagewire.rest_url}/v1/models/echo:invoke"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json={"json": DOCUMENT}) as response:
            default = await response.json()
        async with http.post(url, json={"json": DOCUMENT, "view": "RESPONSE_VIEW_BODY"}) as r:
            body_only = await r.json()
        async with http.post(url, json={"json": DOCUMENT, "view": "RESPONSE_VIEW_JSON"}) as r:
            json_only = await r.json()
    assert default["json"] == DOCUMENT
    assert default["body"]
    assert "json" not in body_only
    assert body_only["body"] == default["body"]
    assert json_only["json"] == DOCUMENT
    assert "body" not in json_only


async def test_the_python_client_asks_for_the_body_alone(
    sagewire: Sagewire, caplog: pytest.LogCaptureFixture
) -> None:
    """A 64 KiB JSON answer leaves sagewire once, not twice (the access record's bytes out)."""
    caplog.set_level(logging.INFO, "sagewire.access")
    document = {"inputs": "x" * 64 * 1024}
    async with AsyncClient(sagewire.target, timeout=20) as client:
        result = await client.invoke("echo", json=document)
        parts = [part async for part in client.stream("tokens", json={"text": "a b c"})]
    assert result.json() == document
    assert parts
    assert all(part._view is None for part in parts)
    calls.write_waiting()  # access records are logged in batches (observability.calls)
    sent = [
        r.access["bytes_out"]  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "sagewire.access" and r.access["method"].endswith("/Invoke")  # type: ignore[attr-defined]
    ]
    assert sent, sent
    assert sent[-1] < len(result.body) + 1024, sent


async def test_websocket_converse_takes_the_view_in_its_open_frame(sagewire: Sagewire) -> None:
    url = f"{sagewire.rest_url}/v1/models/tokens:converse"
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await ws.send_json({"open": {"view": "RESPONSE_VIEW_JSON"}})
        assert "opened" in await ws.receive_json(timeout=20)
        await ws.send_json({"turn": {"turnId": "t", "json": {"text": "a b"}}})
        chunks = []
        while "turnEnd" not in (frame := await ws.receive_json(timeout=20)):
            chunks.append(frame["chunk"])
    assert [chunk["json"].get("token") for chunk in chunks] == ["a", "b", None]
    assert not any("body" in chunk for chunk in chunks)  # JSON records: the view alone
