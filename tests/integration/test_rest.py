"""The REST bridge over real sockets: aiohttp client → sagewire's HTTP listener → the same core
→ real aioboto3 → the emulator. Each test checks status, headers and the JSON body."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from sagewire.emulator.faults import Fault
from sagewire.emulator.server import RunningEmulator
from sagewire.v1 import invoke_pb2
from support import Sagewire, start_sagewire


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


async def _call(
    http: aiohttp.ClientSession,
    sagewire: Sagewire,
    method: str,
    path: str,
    body: Any = None,
    **kwargs: Any,
) -> tuple[int, dict[str, str], Any]:
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    async with http.request(method, sagewire.rest_url + path, data=data, **kwargs) as response:
        text = await response.text()
        parsed = json.loads(text) if text and "json" in response.content_type else text
        return response.status, dict(response.headers), parsed


def _reason(status: dict[str, Any]) -> str:
    info = [d for d in status["details"] if d["@type"].endswith("google.rpc.ErrorInfo")]
    return str(info[0]["reason"])


async def test_list_and_get_models(http: aiohttp.ClientSession, sagewire: Sagewire) -> None:
    code, _, listed = await _call(http, sagewire, "GET", "/v1/models")
    assert code == 200
    echo = next(m for m in listed["models"] if m["name"] == "echo")
    # proto3 JSON: lowerCamelCase names, enums by name, Duration as a string.
    assert echo["endpointName"] == "echo"
    assert echo["mode"] == "ROUTE_MODE_REALTIME"
    assert echo["timeout"] == "60s"
    code, _, got = await _call(http, sagewire, "GET", "/v1/models/echo")
    assert (code, got["model"]["name"]) == (200, "echo")


async def test_invoke_with_json_and_with_base64_body(
    http: aiohttp.ClientSession, sagewire: Sagewire
) -> None:
    code, headers, answer = await _call(
        http, sagewire, "POST", "/v1/models/echo:invoke", {"json": {"max_new_tokens": 20}}
    )
    assert code == 200
    assert headers["Content-Type"].startswith("application/json")
    assert json.loads(base64.b64decode(answer["body"])) == {"max_new_tokens": 20}
    assert answer["json"] == {"max_new_tokens": 20}
    assert answer["invokedProductionVariant"] == "AllTraffic"
    # bytes as base64 and both field spellings in (proto name and lowerCamelCase).
    raw = base64.b64encode(b"plain text").decode()
    for key in ("content_type", "contentType"):
        code, _, answer = await _call(
            http, sagewire, "POST", "/v1/models/echo:invoke", {"body": raw, key: "text/plain"}
        )
        assert code == 200, answer
        assert base64.b64decode(answer["body"]) == b"plain text"
        assert answer["contentType"] == "text/plain"


async def test_custom_verb_is_matched_before_the_variable(
    http: aiohttp.ClientSession, sagewire: Sagewire
) -> None:
    """GET /v1/models/echo:invoke is not GetModel("echo:invoke"): the path exists for POST."""
    code, headers, status = await _call(http, sagewire, "GET", "/v1/models/echo:invoke")
    assert code == 405
    assert headers["Allow"] == "POST"
    assert _reason(status) == "METHOD_NOT_ALLOWED"
    # A suffix no template registers stays part of the name (Envoy's default too).
    code, _, status = await _call(http, sagewire, "GET", "/v1/models/echo:nothing")
    assert code == 404
    assert _reason(status) == "UNKNOWN_MODEL"
    assert "'echo:nothing'" in status["message"]


async def test_unknown_path_and_method(http: aiohttp.ClientSession, sagewire: Sagewire) -> None:
    code, _, status = await _call(http, sagewire, "GET", "/v2/nothing")
    assert (code, status["code"], _reason(status)) == (404, 5, "UNKNOWN_ROUTE")
    assert "GET /v2/nothing" in status["message"]
    code, headers, status = await _call(http, sagewire, "DELETE", "/v1/models")
    assert (code, headers["Allow"], _reason(status)) == (405, "GET", "METHOD_NOT_ALLOWED")


@pytest.mark.parametrize(
    ("body", "reason", "needle"),
    [
        (b'{"json": {"a": 1}', "MALFORMED_JSON", "not valid JSON"),
        (b"[1, 2]", "MALFORMED_JSON", "expected a JSON object"),
        (b"\xff\xfe", "MALFORMED_JSON", "not UTF-8"),
        (b'{"jsn": 1}', "INVALID_JSON_FIELD", 'no field named "jsn"'),
        (b'{"accept": 5}', "INVALID_JSON_FIELD", "accept"),
        (b'{"body": 5}', "INVALID_JSON_FIELD", "body"),
        (b'{"options": {"sessionId": []}}', "INVALID_JSON_FIELD", "session"),
    ],
)
async def test_bad_json_is_a_400_naming_the_problem(
    http: aiohttp.ClientSession, sagewire: Sagewire, body: bytes, reason: str, needle: str
) -> None:
    code, _, status = await _call(http, sagewire, "POST", "/v1/models/echo:invoke", body)
    assert code == 400
    assert status["code"] == 3
    assert _reason(status) == reason
    assert needle in status["message"]


async def test_core_validation_is_the_same_as_grpc(
    http: aiohttp.ClientSession, sagewire: Sagewire
) -> None:
    code, _, status = await _call(http, sagewire, "POST", "/v1/models/echo:invoke", {})
    assert (code, _reason(status)) == (400, "INVALID_ARGUMENT")
    bad = [d for d in status["details"] if d["@type"].endswith("BadRequest")]
    assert bad[0]["fieldViolations"][0]["field"] == "payload"


async def test_unknown_query_parameter(http: aiohttp.ClientSession, sagewire: Sagewire) -> None:
    code, _, status = await _call(http, sagewire, "GET", "/v1/models/echo?colour=red")
    assert (code, _reason(status)) == (400, "INVALID_JSON_FIELD")
    assert "'colour'" in status["message"]


async def test_oversize_body_is_413(http: aiohttp.ClientSession, sagewire: Sagewire) -> None:
    limit = sagewire.server.settings.rest.max_request_bytes
    code, _, status = await _call(
        http, sagewire, "POST", "/v1/models/echo:invoke", b"x" * (limit + 1)
    )
    assert (code, status["code"], _reason(status)) == (413, 8, "REQUEST_TOO_LARGE")
    assert str(limit) in status["message"]


async def test_upstream_errors_keep_their_details(
    http: aiohttp.ClientSession, sagewire: Sagewire, emulator: RunningEmulator
) -> None:
    emulator.set_fault("faulty", Fault(error="throttling"))
    code, headers, status = await _call(
        http, sagewire, "POST", "/v1/models/faulty:invoke", {"json": {}}
    )
    assert code == 429
    assert int(headers["Retry-After"]) >= 1
    assert any(d["@type"].endswith("RetryInfo") for d in status["details"])
    emulator.set_fault(
        "faulty",
        Fault(error="model_error", original_status=422, original_message='{"error":"no"}'),
    )
    code, _, status = await _call(http, sagewire, "POST", "/v1/models/faulty:invoke", {"json": {}})
    model = next(d for d in status["details"] if d["@type"].endswith("ModelErrorDetail"))
    assert model["originalStatusCode"] == 422
    assert model["originalMessage"] == '{"error":"no"}'
    # docs/errors.md: a model's 422 is INVALID_ARGUMENT / MODEL_ERROR, so HTTP 400.
    assert code == 400
    assert (status["code"], _reason(status)) == (3, "MODEL_ERROR")


async def _lines(response: aiohttp.ClientResponse) -> list[dict[str, Any]]:
    return [json.loads(line) async for line in response.content if line.strip()]


async def test_invoke_stream_ndjson(http: aiohttp.ClientSession, sagewire: Sagewire) -> None:
    async with http.post(
        sagewire.rest_url + "/v1/models/tokens:invokeStream", json={"json": {"text": "a b c"}}
    ) as response:
        assert response.status == 200
        assert response.content_type == "application/x-ndjson"
        assert response.headers["sagewire-content-type"]
        lines = await _lines(response)
    assert [m["json"].get("token") for m in lines] == ["a", "b", "c", None]
    assert lines[-1]["json"]["done"] is True
    # uint64 index as a string, and omitted when 0 (proto3 JSON).
    assert [m.get("index") for m in lines] == [None, "1", "2", "3"]


async def _events(response: aiohttp.ClientResponse) -> list[tuple[str, Any]]:
    events: list[tuple[str, Any]] = []
    kind, data = "message", ""
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
        elif not line and data:
            events.append((kind, json.loads(data)))
            kind, data = "message", ""
    return events


async def test_invoke_stream_sse(http: aiohttp.ClientSession, sagewire: Sagewire) -> None:
    async with http.post(
        sagewire.rest_url + "/v1/models/tokens:invokeStream",
        json={"json": {"text": "a b"}},
        headers={"Accept": "text/event-stream"},
    ) as response:
        assert response.status == 200
        assert response.content_type == "text/event-stream"
        events = await _events(response)
    assert [kind for kind, _ in events] == ["message"] * 3
    assert [data["json"].get("token") for _, data in events] == ["a", "b", None]


@pytest.mark.parametrize("accept", ["", "text/event-stream"])
async def test_failure_after_data_ends_with_an_error_record(
    http: aiohttp.ClientSession, sagewire: Sagewire, emulator: RunningEmulator, accept: str
) -> None:
    emulator.set_fault("faulty-stream", Fault(stream_error_after_parts=2))
    async with http.post(
        sagewire.rest_url + "/v1/models/faulty-stream:invokeStream",
        json={"json": {"text": "a b c d e"}},
        headers={"Accept": accept} if accept else {},
    ) as response:
        assert response.status == 200
        if accept:
            events = await _events(response)
            kinds = [kind for kind, _ in events]
            assert kinds[-1] == "error"
            assert set(kinds[:-1]) == {"message"}
            status = events[-1][1]
        else:
            lines = await _lines(response)
            assert len(lines) >= 2
            # The last message may be the bytes of a record the failure cut (no json).
            assert all("json" in line for line in lines[:-2])
            status = lines[-1]["error"]
    assert status["code"] != 0
    assert status["message"]
    assert _reason(status)


async def test_error_before_data_is_a_plain_http_error(
    http: aiohttp.ClientSession, sagewire: Sagewire
) -> None:
    code, _, status = await _call(
        http, sagewire, "POST", "/v1/models/echo:invokeStream", {"json": {}}
    )
    assert code == 400
    assert status["code"] == 9


async def test_grpc_timeout_header_bounds_the_call(
    http: aiohttp.ClientSession, sagewire: Sagewire, emulator: RunningEmulator
) -> None:
    # The model answers after 30 s: far beyond the bound below, which includes the request's
    # own setup and leaves a loaded machine room.
    emulator.set_fault("slow-echo", Fault(latency_ms=30_000))
    started = time.monotonic()
    code, _, status = await _call(
        http,
        sagewire,
        "POST",
        "/v1/models/slow-echo:invoke",
        {"json": {}},
        headers={"Grpc-Timeout": "200m"},
    )
    assert (code, status["code"], _reason(status)) == (504, 4, "DEADLINE_EXCEEDED")
    assert time.monotonic() - started < 10
    code, _, status = await _call(
        http, sagewire, "GET", "/v1/models", headers={"Grpc-Timeout": "soon"}
    )
    assert code == 400
    assert "Grpc-Timeout" in status["message"]


async def _wait_until(predicate: Any, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def test_disconnect_cancels_the_upstream_stream(
    sagewire: Sagewire, emulator: RunningEmulator
) -> None:
    words = " ".join(f"w{i}" for i in range(200))
    async with aiohttp.ClientSession() as session:
        response = await session.post(
            sagewire.rest_url + "/v1/models/tokens:invokeStream",
            json={"json": {"text": words, "delay_ms": 100}},  # 20 s: still running at the hang-up
        )
        assert response.status == 200
        for _ in range(3):
            await response.content.readline()
        response.close()  # hang up mid-stream
    stats = emulator.stats("tokens")
    await _wait_until(lambda: stats.streams_aborted == 1)
    sent = stats.stream_parts_sent
    await asyncio.sleep(0.3)
    assert stats.stream_parts_sent == sent  # the model stopped producing
    assert stats.active_streams == 0
    assert stats.streams_completed == 0


async def test_disconnect_cancels_the_upstream_invocation(
    sagewire: Sagewire, emulator: RunningEmulator
) -> None:
    # The client hangs up once the call is upstream (not on a timer: on a loaded machine the
    # request may not have got there yet); the model would answer only after 30 s.
    emulator.set_fault("slow-echo", Fault(latency_ms=30_000))
    stats = emulator.stats("slow-echo")
    async with aiohttp.ClientSession() as session:
        posting = asyncio.ensure_future(
            session.post(sagewire.rest_url + "/v1/models/slow-echo:invoke", json={"json": {}})
        )
        await _wait_until(lambda: stats.active_invocations == 1, within=30)
        posting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await posting
    await _wait_until(lambda: stats.invocations_cancelled == 1, within=15)


async def test_health_endpoints(http: aiohttp.ClientSession, sagewire: Sagewire) -> None:
    for path in ("/healthz", "/readyz"):
        code, _, body = await _call(http, sagewire, "GET", path)
        assert (code, body) == (200, {"status": "SERVING"})


async def test_grpc_timeout_ends_a_stream_with_the_deadline_record(
    http: aiohttp.ClientSession, sagewire: Sagewire, emulator: RunningEmulator
) -> None:
    # The deadline also covers the call's setup and its first record (over 0.5 s on a loaded
    # machine): 3 s, against a stream of 100 x 100 ms.
    words = " ".join(f"w{i}" for i in range(100))
    async with http.post(
        sagewire.rest_url + "/v1/models/tokens:invokeStream",
        json={"json": {"text": words, "delay_ms": 100}},
        headers={"Grpc-Timeout": "3S"},
    ) as response:
        assert response.status == 200
        lines = await _lines(response)
    assert 1 <= len(lines) < 100
    assert lines[-1]["error"]["code"] == 4  # DEADLINE_EXCEEDED
    stats = emulator.stats("tokens")
    await _wait_until(lambda: stats.streams_aborted == 1)  # the upstream stream was stopped


async def test_readyz_flips_when_the_drain_begins(emulator: RunningEmulator) -> None:
    async with start_sagewire(emulator) as sw, aiohttp.ClientSession() as session:
        await sw.server.health.enter_graceful_shutdown()
        async with session.get(sw.rest_url + "/readyz") as answer:
            assert answer.status == 503
            assert await answer.json() == {"status": "NOT_SERVING"}
        async with session.get(sw.rest_url + "/healthz") as answer:
            assert answer.status == 200  # alive, only not ready


async def test_one_drain_finishes_calls_on_both_listeners(emulator: RunningEmulator) -> None:
    """stop() lets an in-flight gRPC call and an in-flight REST call both finish, then both
    listeners refuse new connections."""
    async with start_sagewire(emulator) as sw, aiohttp.ClientSession() as session:
        rest_call = asyncio.ensure_future(
            session.post(sw.rest_url + "/v1/models/slow-echo:invoke", json={"json": 1})
        )
        grpc_call = sw.inference.Invoke(invoke_pb2.InvokeRequest(model="slow-echo", body=b"1"))
        stats = emulator.stats("slow-echo")
        await _wait_until(lambda: stats.invocations == 2)
        await sw.server.stop()
        answer = await rest_call
        assert answer.status == 200
        assert (await answer.json())["json"] == 1
        assert (await grpc_call).body == b"1"
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(sw.rest_url + "/healthz")


async def test_wrong_method_on_a_route_beside_transcoding_is_405(
    http: aiohttp.ClientSession, sagewire: Sagewire
) -> None:
    for path, allow in [
        ("/v1/models/echo/invocations", "POST"),
        ("/v1/models/echo:uploadAsync", "POST"),
        ("/healthz", "GET,HEAD"),
    ]:
        code, headers, status = await _call(http, sagewire, "PUT", path)
        assert (code, _reason(status)) == (405, "METHOD_NOT_ALLOWED"), path
        assert headers["Allow"] == allow
