"""UploadAsync as a streamed HTTP body: curl and aiohttp → sagewire's REST listener → the
gRPC UploadAsync body → core.async_jobs → multipart upload to moto's S3 → the emulator's
InvokeEndpointAsync. The job is then read over gRPC: one job, both transports."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from async_support import STAGING_BUCKET, async_settings

from sagewire.emulator.server import RunningEmulator
from sagewire.v1 import async_jobs_pb2 as pb
from support import Sagewire, start_sagewire

MiB = 1024 * 1024
COMPLETED = pb.ASYNC_STATE_COMPLETED


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


def _url(sw: Sagewire, model: str) -> str:
    return f"{sw.rest_url}/v1/models/{model}:uploadAsync"


def _reason(status: dict[str, Any]) -> str:
    info = [d for d in status["details"] if d["@type"].endswith("google.rpc.ErrorInfo")]
    return str(info[0]["reason"])


async def _staged(s3: Any) -> dict[str, int]:
    """The staged inputs of route echo-async: key → size."""
    listed = await s3.list_objects_v2(
        Bucket=STAGING_BUCKET, Prefix="sagewire/async-inputs/echo-async/"
    )
    return {o["Key"]: o["Size"] for o in listed.get("Contents", [])}


async def _output(sw: Sagewire, job_id: str) -> bytes:
    watch = sw.inference.WatchAsync(pb.WatchAsyncRequest(job_id=job_id), timeout=30)
    assert [update.state async for update in watch][-1] == COMPLETED
    call = sw.inference.ReadAsyncOutput(pb.ReadAsyncOutputRequest(job_id=job_id), timeout=30)
    return b"".join([message.chunk async for message in call])


async def test_a_chunked_body_is_staged_in_parts_and_submitted(
    http: aiohttp.ClientSession, async_sagewire: Sagewire, s3: Any
) -> None:
    data = os.urandom(12 * MiB)  # three 5 MiB parts

    async def body() -> AsyncIterator[bytes]:  # no Content-Length: chunked transfer
        for at in range(0, len(data), MiB):
            yield data[at : at + MiB]

    before = await _staged(s3)
    async with http.post(_url(async_sagewire, "echo-async"), data=body()) as response:
        answer = await response.json()
        assert response.status == 200, answer
    assert answer["inputSize"] == str(len(data))  # uint64: a string in proto3 JSON
    job = answer["job"]
    assert job["model"] == "echo-async"
    assert job["jobId"]
    assert job["inferenceId"]
    assert job["submittedAt"].endswith("Z")
    (staged,) = (await _staged(s3)).keys() - before.keys()
    head = await s3.head_object(Bucket=STAGING_BUCKET, Key=staged, PartNumber=1)
    assert (head["PartsCount"], head["ContentLength"]) == (3, 5 * MiB)
    output = await _output(async_sagewire, job["jobId"])
    assert hashlib.sha256(output).digest() == hashlib.sha256(data).digest()


async def test_curl_upload_with_sagemaker_headers(async_sagewire: Sagewire, tmp_path: Path) -> None:
    (tmp_path / "input.json").write_bytes(b'{"a": 1}')
    process = await asyncio.create_subprocess_exec(
        "curl", "--silent", "--show-error", "--fail-with-body",
        "--data-binary", f"@{tmp_path / 'input.json'}",
        "-H", "Content-Type: application/json",
        "-H", "X-Amzn-SageMaker-Custom-Attributes: delay_ms=0",
        "-H", "X-Amzn-SageMaker-Inference-Id: from-curl",
        "-H", "X-Amzn-SageMaker-RequestTTLSeconds: 300",
        _url(async_sagewire, "slow-echo"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, (out, err)
    answer = json.loads(out)
    assert answer["inputSize"] == "8"
    assert answer["job"]["inferenceId"] == "from-curl"
    assert await _output(async_sagewire, answer["job"]["jobId"]) == b'{"a": 1}'


@pytest.mark.parametrize(
    ("model", "headers", "code", "reason", "needle"),
    [
        ("nope", {}, 404, "UNKNOWN_MODEL", "nope"),
        ("echo", {}, 400, "WRONG_MODE", "mode async"),
        (
            "slow-echo-strict",
            {"X-Amzn-SageMaker-Custom-Attributes": "x"},
            400,
            "OPTION_NOT_ALLOWED",
            "options.custom_attributes",
        ),
        (
            "slow-echo",
            {"X-Amzn-SageMaker-RequestTTLSeconds": "10"},
            400,
            "INVALID_ARGUMENT",
            "60–21600",
        ),
        (
            "slow-echo",
            {"X-Amzn-SageMaker-RequestTTLSeconds": "soon"},
            400,
            "INVALID_ARGUMENT",
            "whole number",
        ),
        (
            "slow-echo",
            {"X-Amzn-SageMaker-Target-Variant": "B"},
            400,
            "INVALID_ARGUMENT",
            "not an InvokeEndpointAsync header",
        ),
        ("slow-echo", {"Grpc-Timeout": "1x"}, 400, "INVALID_ARGUMENT", "Grpc-Timeout"),
    ],
)
async def test_refusals_name_the_problem(
    http: aiohttp.ClientSession,
    async_sagewire: Sagewire,
    model: str,
    headers: dict[str, str],
    code: int,
    reason: str,
    needle: str,
) -> None:
    async with http.post(_url(async_sagewire, model), data=b"{}", headers=headers) as response:
        status = await response.json()
        assert response.status == code, status
    assert _reason(status) == reason
    assert needle in status["message"]


async def test_an_oversized_upload_is_refused_and_cleaned_up(
    http: aiohttp.ClientSession, async_emulator: RunningEmulator, s3_url: str, s3: Any
) -> None:
    settings = async_settings(s3_url, max_input_bytes=6 * MiB)
    async with start_sagewire(async_emulator.url, **settings) as sw:

        async def body() -> AsyncIterator[bytes]:
            for _ in range(8):
                yield b"\0" * MiB

        async with http.post(_url(sw, "echo-async"), data=body()) as response:
            status = await response.json()
            assert response.status == 400
    assert _reason(status) == "PAYLOAD_TOO_LARGE"
    assert str(6 * MiB) in status["message"]
    listed = await s3.list_multipart_uploads(Bucket=STAGING_BUCKET)
    assert listed.get("Uploads", []) == []
