"""Differential test: the REST bridge against Envoy's gRPC-JSON transcoder.

Envoy (strict request validation, NDJSON streams, `convert_grpc_status`) runs in front of the
same sagewire's gRPC port, on a descriptor set compiled from the same protos. Every annotated
RPC gets the same requests through both; status and JSON body must agree. Where the bridge
deliberately answers differently, the case says so and asserts both sides of the difference
(docs/rest.md, "Differences from Envoy's transcoder").
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from envoy_support import running_envoy

from sagewire.emulator.faults import Fault
from sagewire.emulator.server import RunningEmulator
from support import Sagewire


@dataclass
class Answer:
    status: int
    content_type: str
    text: str
    headers: dict[str, str]

    @property
    def json(self) -> Any:
        return json.loads(self.text)

    @property
    def lines(self) -> list[Any]:
        return [json.loads(line) for line in self.text.splitlines() if line.strip()]


@dataclass
class Pair:
    envoy: str
    bridge: str
    http: aiohttp.ClientSession

    async def one(self, base: str, method: str, path: str, body: Any, headers: Any) -> Answer:
        data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
        async with self.http.request(method, base + path, data=data, headers=headers) as r:
            return Answer(r.status, r.content_type, await r.text(), dict(r.headers))

    async def both(
        self, method: str, path: str, body: Any = None, headers: Any = None
    ) -> tuple[Answer, Answer]:
        envoy = await self.one(self.envoy, method, path, body, headers)
        bridge = await self.one(self.bridge, method, path, body, headers)
        return envoy, bridge


@pytest.fixture(scope="module")
def envoy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("envoy")


@pytest.fixture(scope="module")
def envoy(envoy_dir: Path, sagewire: Sagewire) -> Iterator[str]:
    with running_envoy(envoy_dir / "sync", sagewire.server.port) as url:
        yield url


@pytest.fixture(scope="module")
def async_envoy(envoy_dir: Path, async_sagewire: Sagewire) -> Iterator[str]:
    with running_envoy(envoy_dir / "async", async_sagewire.server.port) as url:
        yield url


@pytest_asyncio.fixture(loop_scope="session")
async def pair(envoy: str, sagewire: Sagewire) -> AsyncIterator[Pair]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        yield Pair(envoy, sagewire.rest_url, http)


def _agree(envoy: Answer, bridge: Answer) -> None:
    assert bridge.status == envoy.status, (envoy.text, bridge.text)
    assert bridge.json == envoy.json


# (method, path, body): both answer the same status and the same JSON.
SAME: list[tuple[str, str, Any]] = [
    ("GET", "/v1/models", None),
    ("GET", "/v1/models/", None),  # a trailing slash is ignored
    ("GET", "/v1/models/echo", None),
    ("GET", "/v1/models/nope", None),  # NOT_FOUND with ErrorInfo
    ("GET", "/v1/models/echo:nothing", None),  # an unregistered verb stays in the name
    ("GET", "/v1/models/a%2Fb", None),  # a single-segment variable is decoded in full
    ("POST", "/v1/models/echo:invoke", {"json": {"a": [1, 1.5, "x", None, True, {"b": 2}]}}),
    ("POST", "/v1/models/echo:invoke", {"body": "eA==", "contentType": "text/plain"}),
    ("POST", "/v1/models/echo:invoke", {"body": "eA==", "content_type": "text/plain"}),
    ("POST", "/v1/models/echo:invoke", {"model": "echo", "json": 1}),  # same value as the path
    ("POST", "/v1/models/echo:invoke?contentType=text/plain", {"body": "eA=="}),
    ("POST", "/v1/models/echo:invoke?options.customAttributes=x", {"body": "eA=="}),
    ("POST", "/v1/models/echo:invoke", {}),  # INVALID_ARGUMENT from the core, BadRequest
    ("POST", "/v1/models/echo:invoke", b""),
    ("POST", "/v1/models/echo-strict:invoke", {"json": 1, "options": {"targetVariant": "B"}}),
    ("POST", "/v1/models/missing:invoke", {"json": 1}),  # the endpoint does not exist
    ("POST", "/v1/models/echo:invokeStream", {"json": 1}),  # FAILED_PRECONDITION before data
    ("POST", "/v1/models/nope:submitAsync", {"json": 1}),
    ("POST", "/v1/models/echo:submitAsync", {"json": 1}),  # wrong mode
    ("GET", "/v1/jobs/garbage", None),
    ("GET", "/v1/jobs/garbage:watch", None),
    ("GET", "/v1/jobs/garbage/output", None),
]


@pytest.mark.parametrize(("method", "path", "body"), SAME)
async def test_same_answer(pair: Pair, method: str, path: str, body: Any) -> None:
    _agree(*await pair.both(method, path, body))


async def test_difference_json_keys_reach_the_model_in_the_caller_s_order(pair: Pair) -> None:
    """Deliberate (docs/rest.md): through Envoy, `json` crosses gRPC as a google.protobuf.Value,
    whose objects are protobuf maps, so the model gets the keys in the map's order; the bridge
    sends the caller's JSON in the caller's order. The same JSON value either way."""
    sent = {"z": 1, "a": {"y": [1.5, None], "b": True}, "m": "x"}
    envoy, bridge = await pair.both("POST", "/v1/models/echo:invoke", {"json": sent})
    assert (envoy.status, bridge.status) == (200, 200)
    assert base64.b64decode(bridge.json["body"]) == b'{"z":1,"a":{"y":[1.5,null],"b":true},"m":"x"}'
    assert json.loads(base64.b64decode(envoy.json["body"])) == sent
    assert bridge.json["json"] == envoy.json["json"] == sent
    assert {k: v for k, v in bridge.json.items() if k != "body"} == {
        k: v for k, v in envoy.json.items() if k != "body"
    }


@pytest.mark.parametrize(
    ("fault", "status"),
    [
        (Fault(error="throttling"), 429),
        (Fault(error="model_not_ready"), 503),
        (Fault(error="validation", message="bad input"), 400),
        (Fault(error="model_error", original_status=422, original_message='{"e":1}'), 400),
        (Fault(error="internal_failure"), 500),
    ],
)
async def test_upstream_errors_agree(
    pair: Pair, emulator: RunningEmulator, fault: Fault, status: int
) -> None:
    emulator.set_fault("faulty", fault)
    envoy, bridge = await pair.both("POST", "/v1/models/faulty:invoke", {"json": 1})
    _agree(envoy, bridge)
    assert bridge.status == status
    if bridge.json.get("details") and any(
        d["@type"].endswith("RetryInfo") for d in bridge.json["details"]
    ):
        assert int(bridge.headers["Retry-After"]) >= 1  # the bridge adds the header


# Requests neither can read: both 400, but Envoy answers in text/plain, the bridge with a
# google.rpc.Status JSON naming the problem.
UNREADABLE = [
    ("POST", "/v1/models/echo:invoke", b'{"json": {"a": 1}'),  # malformed
    ("POST", "/v1/models/echo:invoke", b'{"accept": 5}'),  # wrong type
    ("POST", "/v1/models/echo:invoke", b'{"json": 1, "json": 2}'),  # repeated key
    ("POST", "/v1/models/echo:invoke", b'{"json": 1, "body": "eA=="}'),  # two oneof members
    ("POST", "/v1/models/echo:invoke", b'{"json": NaN}'),
    ("POST", "/v1/models/echo:invoke", b'{"model": "other", "json": 1}'),  # conflicts with path
    ("GET", "/v1/models/echo?colour=red", None),  # unknown query parameter
]


@pytest.mark.parametrize(("method", "path", "body"), UNREADABLE)
async def test_unreadable_requests_are_400_on_both(
    pair: Pair, method: str, path: str, body: Any
) -> None:
    envoy, bridge = await pair.both(method, path, body)
    assert envoy.status == bridge.status == 400
    assert bridge.json["code"] == 3
    assert bridge.json["message"]


async def test_streams_agree_line_by_line(pair: Pair) -> None:
    envoy, bridge = await pair.both(
        "POST", "/v1/models/tokens:invokeStream", {"json": {"text": "a b c"}}
    )
    assert envoy.status == bridge.status == 200
    assert bridge.lines == envoy.lines
    assert len(bridge.lines) == 4
    # Initial metadata becomes response headers on both.
    assert bridge.headers["sagewire-content-type"] == envoy.headers["sagewire-content-type"]
    # Difference: the bridge names NDJSON; Envoy labels the same lines application/json.
    assert (envoy.content_type, bridge.content_type) == ("application/json", "application/x-ndjson")
    raw_envoy, raw_bridge = await pair.both(
        "POST", "/v1/models/tokens-raw:invokeStream", {"json": {"text": "a b"}}
    )
    assert raw_bridge.lines == raw_envoy.lines


async def test_difference_failure_after_data(pair: Pair, emulator: RunningEmulator) -> None:
    """Envoy ends the 200 stream silently; the bridge ends it with the error record."""
    emulator.set_fault("faulty-stream", Fault(stream_error_after_parts=2))
    envoy, bridge = await pair.both(
        "POST", "/v1/models/faulty-stream:invokeStream", {"json": {"text": "a b c d e"}}
    )
    assert envoy.status == bridge.status == 200
    assert bridge.lines[:-1] == envoy.lines
    assert bridge.lines[-1]["error"]["code"] == 4
    assert "error" not in envoy.lines[-1]


async def test_difference_unknown_fields(pair: Pair) -> None:
    """Envoy drops unknown JSON fields; the bridge refuses them (a typo is not ignored)."""
    envoy, bridge = await pair.both("POST", "/v1/models/echo:invoke", {"json": 1, "jsn": 2})
    assert envoy.status == 200
    assert bridge.status == 400
    assert '"jsn"' in bridge.json["message"]


async def test_difference_unknown_method_and_path(pair: Pair) -> None:
    """Envoy: 404 text for both; the bridge: 405 with Allow for a known path, JSON 404 else."""
    envoy, bridge = await pair.both("GET", "/v1/models/echo:invoke")
    assert (envoy.status, bridge.status, bridge.headers["Allow"]) == (404, 405, "POST")
    envoy, bridge = await pair.both("GET", "/v2/nothing")
    assert envoy.status == bridge.status == 404
    assert bridge.json["code"] == 5


async def test_difference_path_field_in_the_query(pair: Pair) -> None:
    """Envoy lets `?name=` override the path's {name}; the bridge refuses it (http.proto: query
    parameters are the fields the path does not bind)."""
    envoy, bridge = await pair.both("GET", "/v1/models/echo?name=nope")
    assert envoy.status == 404  # GetModel("nope")
    assert bridge.status == 400


async def test_deadlines_agree_on_the_code(pair: Pair) -> None:
    envoy, bridge = await pair.both(
        "POST", "/v1/models/slow-echo:invoke", {"json": 1}, {"Grpc-Timeout": "200m"}
    )
    assert envoy.status == bridge.status == 504
    assert envoy.json["code"] == bridge.json["code"] == 4
    # Difference: gRPC's own "Deadline Exceeded" (Envoy) vs the core's message naming the model.
    envoy, bridge = await pair.both(
        "POST", "/v1/models/echo:invoke", {"json": 1}, {"Grpc-Timeout": "soon"}
    )
    assert (envoy.status, bridge.status) == (500, 400)  # gRPC cannot parse it; the bridge says so


@pytest_asyncio.fixture(loop_scope="session")
async def async_pair(async_envoy: str, async_sagewire: Sagewire) -> AsyncIterator[Pair]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        yield Pair(async_envoy, async_sagewire.rest_url, http)


async def test_async_rpcs_agree(async_pair: Pair) -> None:
    payload = {"json": {"n": 1}, "options": {"customAttributes": "delay_ms=50"}}
    envoy, bridge = await async_pair.both("POST", "/v1/models/slow-echo:submitAsync", payload)
    assert envoy.status == bridge.status == 200
    assert set(bridge.json["job"]) == set(envoy.json["job"])
    job = bridge.json["job"]["jobId"]
    # Watch through each until the job is done: the same states in the same order.
    envoy, bridge = await async_pair.both("GET", f"/v1/jobs/{job}:watch")
    assert envoy.status == bridge.status == 200
    states = [line["state"] for line in bridge.lines]
    assert states[-1] == "ASYNC_STATE_COMPLETED"
    assert [line["state"] for line in envoy.lines][-1] == states[-1]
    for path in (f"/v1/jobs/{job}", f"/v1/jobs/{job}/output"):
        envoy, bridge = await async_pair.both("GET", path)
        assert envoy.status == bridge.status == 200
        assert bridge.lines == envoy.lines
    output = (await async_pair.one(async_pair.bridge, "GET", f"/v1/jobs/{job}", None, None)).json
    assert json.loads(base64.b64decode(output["body"])) == {"n": 1}
    await asyncio.sleep(0)
