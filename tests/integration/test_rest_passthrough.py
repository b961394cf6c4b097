"""Raw model passthrough over real sockets: curl and aiohttp → sagewire's REST listener →
the core → real aioboto3 → the emulator. The body goes to the model as-is and its bytes come
back as-is; options, limits and errors are the core's, as over gRPC."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from sagewire.emulator.faults import Fault
from sagewire.emulator.server import RunningEmulator
from support import BOTH_AWS_CLIENTS, Sagewire

pytestmark = BOTH_AWS_CLIENTS

INVOCATIONS = "/v1/models/{}/invocations"
STREAM = "/v1/models/{}/invocations-response-stream"


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


def _reason(status: dict[str, Any]) -> str:
    info = [d for d in status["details"] if d["@type"].endswith("google.rpc.ErrorInfo")]
    return str(info[0]["reason"])


def _field(status: dict[str, Any]) -> str:
    bad = [d for d in status["details"] if d["@type"].endswith("google.rpc.BadRequest")]
    return str(bad[0]["fieldViolations"][0]["field"])


async def _curl(*args: str) -> tuple[int, bytes, bytes]:
    process = await asyncio.create_subprocess_exec(
        "curl", "--silent", "--show-error", *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out, err


async def test_curl_data_binary_just_works(sagewire: Sagewire, tmp_path: Path) -> None:
    """`curl --data-binary @input.json` — the body reaches the model byte for byte (echo) and
    the model's content type comes back."""
    body = b'{"inputs": "hello",  "parameters": {"max_new_tokens": 20}}\n'
    (tmp_path / "input.json").write_bytes(body)
    code, out, err = await _curl(
        "--data-binary", f"@{tmp_path / 'input.json'}",
        "-H", "Content-Type: application/json",
        "-D", str(tmp_path / "headers"),
        sagewire.rest_url + INVOCATIONS.format("echo"),
    )  # fmt: skip
    assert code == 0, err
    assert out == body
    headers = (tmp_path / "headers").read_text().lower()
    assert "200 ok" in headers.splitlines()[0]
    assert "content-type: application/json" in headers
    assert "x-amzn-invoked-production-variant: alltraffic" in headers


async def test_body_and_content_type_are_not_touched(
    http: aiohttp.ClientSession, sagewire: Sagewire
) -> None:
    body = bytes(range(256)) * 8  # not UTF-8, not JSON
    async with http.post(
        sagewire.rest_url + INVOCATIONS.format("echo"),
        data=body,
        headers={"Content-Type": "application/x-custom; v=2", "Accept": "*/*"},
    ) as response:
        assert response.status == 200
        assert await response.read() == body
        assert response.headers["Content-Type"] == "application/x-custom; v=2"


async def test_option_headers_are_honoured_under_allow(
    http: aiohttp.ClientSession, sagewire: Sagewire
) -> None:
    url = sagewire.rest_url + INVOCATIONS.format("echo")
    headers = {
        "Content-Type": "text/plain",
        "X-Amzn-SageMaker-Custom-Attributes": "trace=abc",
        "X-Amzn-SageMaker-Target-Variant": "B",
    }
    async with http.post(url, data=b"hi", headers=headers) as response:
        assert response.status == 200
        assert response.headers["X-Amzn-Invoked-Production-Variant"] == "B"
        assert response.headers["X-Amzn-SageMaker-Custom-Attributes"] == "trace=abc"
    # echo-strict allows no option: the same error a gRPC caller gets for options.*.
    strict = sagewire.rest_url + INVOCATIONS.format("echo-strict")
    async with http.post(strict, data=b"hi", headers=headers) as response:
        status = await response.json()
        assert response.status == 400
        assert (_reason(status), _field(status)) == (
            "OPTION_NOT_ALLOWED",
            "options.custom_attributes",
        )


@pytest.mark.parametrize(
    ("headers", "field", "needle"),
    [
        ({"X-Amzn-SageMaker-Target-Varient": "B"}, "X-Amzn-SageMaker-Target-Varient", "known:"),
        ({"X-Amzn-SageMaker-Target-Variant": "no_underscores"}, "options.target_variant", "must"),
        ({"X-Amzn-SageMaker-Inference-Id": "x" * 65}, "options.inference_id", "limit is 64"),
        ({"Grpc-Timeout": "soon"}, "Grpc-Timeout", "not a gRPC timeout"),
    ],
)
async def test_bad_headers_are_400_naming_the_header(
    http: aiohttp.ClientSession,
    sagewire: Sagewire,
    headers: dict[str, str],
    field: str,
    needle: str,
) -> None:
    async with http.post(
        sagewire.rest_url + INVOCATIONS.format("echo"), data=b"{}", headers=headers
    ) as response:
        status = await response.json()
        assert response.status == 400, status
        assert status["code"] == 3
        assert _field(status) == field
        assert needle in status["message"]


async def test_body_over_sagemakers_limit(http: aiohttp.ClientSession, sagewire: Sagewire) -> None:
    limit = sagewire.server.settings.server.max_body_bytes
    for chunked in (False, True):
        data: Any = b"x" * (limit + 1)
        if chunked:  # no Content-Length: refused while reading

            async def pieces() -> AsyncIterator[bytes]:
                for _ in range(limit // 65536 + 2):
                    yield b"x" * 65536

            data = pieces()
        async with http.post(sagewire.rest_url + INVOCATIONS.format("echo"), data=data) as response:
            status = await response.json()
            assert response.status == 400
            assert (_reason(status), _field(status)) == ("PAYLOAD_TOO_LARGE", "body")
            assert str(limit) in status["message"]


async def test_errors_are_status_json(
    http: aiohttp.ClientSession, sagewire: Sagewire, emulator: RunningEmulator
) -> None:
    async with http.post(sagewire.rest_url + INVOCATIONS.format("nope"), data=b"{}") as response:
        assert response.status == 404
        assert _reason(await response.json()) == "UNKNOWN_MODEL"
    # A stream route through the unary passthrough is the same as Invoke on it (allowed),
    # an async route is not.
    async with http.post(
        sagewire.rest_url + INVOCATIONS.format("async-only"), data=b"{}"
    ) as response:
        assert response.status == 400
        assert _reason(await response.json()) == "WRONG_MODE"
    emulator.set_fault(
        "faulty", Fault(error="model_error", original_status=503, original_message="warming")
    )
    async with http.post(sagewire.rest_url + INVOCATIONS.format("faulty"), data=b"{}") as response:
        status = await response.json()
        detail = next(d for d in status["details"] if d["@type"].endswith("ModelErrorDetail"))
        assert detail["originalStatusCode"] == 503
        assert detail["originalMessage"] == "warming"
        assert response.headers["Content-Type"].startswith("application/json")


async def test_grpc_timeout_bounds_the_call(
    http: aiohttp.ClientSession, sagewire: Sagewire
) -> None:
    async with http.post(
        sagewire.rest_url + INVOCATIONS.format("slow-echo"),
        data=b"{}",
        headers={"Grpc-Timeout": "200m"},
    ) as response:
        status = await response.json()
        assert response.status == 504
        assert _reason(status) == "DEADLINE_EXCEEDED"


async def test_response_stream_relays_the_models_bytes(
    http: aiohttp.ClientSession, sagewire: Sagewire
) -> None:
    """The same bytes InvokeStream delivers, with the model's content type."""
    request = json.dumps({"text": "one two three four five"}).encode()
    async with http.post(sagewire.rest_url + STREAM.format("tokens-raw"), data=request) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/jsonlines"
        assert response.headers["Transfer-Encoding"] == "chunked"
        assert response.headers["X-Amzn-Invoked-Production-Variant"] == "AllTraffic"
        body = await response.read()
    lines = [json.loads(line) for line in body.splitlines()]
    assert [line.get("token") for line in lines] == ["one", "two", "three", "four", "five", None]
    assert lines[-1] == {"done": True, "count": 5}


async def test_response_stream_flushes_each_part(
    http: aiohttp.ClientSession, sagewire: Sagewire, emulator: RunningEmulator
) -> None:
    """The first word arrives while the model still sleeps before the second (60 s): nothing
    is held back. Leaving early then cancels the upstream stream."""
    request = json.dumps({"text": "first second", "delay_ms": 60_000}).encode()
    async with http.post(sagewire.rest_url + STREAM.format("tokens"), data=request) as response:
        assert response.status == 200
        first = await asyncio.wait_for(response.content.readline(), 20)
    assert json.loads(first) == {"token": "first", "index": 0}


async def test_response_stream_failure_after_data_is_not_a_clean_end(
    http: aiohttp.ClientSession, sagewire: Sagewire, emulator: RunningEmulator, tmp_path: Path
) -> None:
    """A failure mid-stream cuts the chunked body: aiohttp raises, curl exits 18."""
    emulator.set_fault("faulty-stream", Fault(stream_error_after_parts=3))
    request = json.dumps({"text": " ".join(f"w{i}" for i in range(40))}).encode()
    url = sagewire.rest_url + STREAM.format("faulty-stream")
    async with http.post(url, data=request) as response:
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    (tmp_path / "in.json").write_bytes(request)
    code, _, err = await _curl(
        "--data-binary", f"@{tmp_path / 'in.json'}", url, "-o", str(tmp_path / "out")
    )
    assert code == 18, err  # CURLE_PARTIAL_FILE
    assert (tmp_path / "out").read_bytes().startswith(b'{"token"')


async def test_response_stream_error_before_data(
    http: aiohttp.ClientSession, sagewire: Sagewire, emulator: RunningEmulator
) -> None:
    emulator.set_fault("faulty-stream", Fault(error="throttling"))
    async with http.post(
        sagewire.rest_url + STREAM.format("faulty-stream"), data=b'{"text": "a"}'
    ) as response:
        status = await response.json()
        assert response.status == 429
        assert int(response.headers["Retry-After"]) >= 1
        assert status["code"] == 8
    async with http.post(sagewire.rest_url + STREAM.format("echo"), data=b"{}") as response:
        assert response.status == 400
        assert _reason(await response.json()) == "WRONG_MODE"
