"""Async jobs belong to their submitter: another caller presenting the job id gets NOT_FOUND on
GetAsyncResult, WatchAsync and ReadAsyncOutput (gRPC and REST; the check comes before any S3
request), and the binding survives a rotation of the job-id keys. Real S3 (moto) and the
emulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import pytest_asyncio
from async_support import ASYNC_ROUTES, async_settings
from auth_support import API_KEY_LINES, BATCH_KEY, READER_KEY, api_key

from sagewire.emulator.server import RunningEmulator
from sagewire.v1 import async_jobs_pb2 as pb
from support import TEST_JOB_ID_KEY, Sagewire, failure, settings_for, start_sagewire

pytestmark = pytest.mark.asyncio(loop_scope="session")

NEW_KEY = "bmV3LXRlc3Qtam9iLWlkLWtleS0zMi1ieXRlcy1sb25nIQ=="


def _settings(emulator: RunningEmulator, s3_url: str, keys: Path, job_id_keys: list[str]) -> Any:
    base = async_settings(s3_url)
    routes = {
        name: {**route, "callers": ["key:batch", "key:reader"]}
        for name, route in ASYNC_ROUTES.items()
    }
    return settings_for(
        emulator.url,
        routes=routes,
        aws=base["aws"],
        async_jobs={**base["async_jobs"], "job_id_keys": job_id_keys},
        auth={"api_keys": {"file": str(keys)}},
    )


@pytest_asyncio.fixture(loop_scope="session")
async def keys(tmp_path: Path) -> AsyncIterator[Path]:
    path = tmp_path / "api-keys"
    path.write_text(API_KEY_LINES)
    yield path


async def _reads(sw: Sagewire, job_id: str, key: str) -> list[tuple[grpc.StatusCode, str]]:
    """The outcome of each read RPC for `job_id` as the caller holding `key`."""
    metadata = api_key(key)
    outcomes = []
    try:
        await sw.inference.GetAsyncResult(
            pb.GetAsyncResultRequest(job_id=job_id), metadata=metadata, timeout=10
        )
        outcomes.append((grpc.StatusCode.OK, ""))
    except grpc.aio.AioRpcError as error:
        outcomes.append((error.code(), failure(error).reason))
    for stream in (
        sw.inference.WatchAsync(pb.WatchAsyncRequest(job_id=job_id), metadata=metadata, timeout=10),
        sw.inference.ReadAsyncOutput(
            pb.ReadAsyncOutputRequest(job_id=job_id), metadata=metadata, timeout=10
        ),
    ):
        try:
            async for _ in stream:
                pass
            outcomes.append((grpc.StatusCode.OK, ""))
        except grpc.aio.AioRpcError as error:
            outcomes.append((error.code(), failure(error).reason))
    return outcomes


async def test_another_caller_cannot_see_a_job(
    async_emulator: RunningEmulator, s3_url: str, keys: Path
) -> None:
    settings = _settings(async_emulator, s3_url, keys, [TEST_JOB_ID_KEY])
    async with start_sagewire(async_emulator.url, settings) as sw:
        submitted = await sw.inference.SubmitAsync(
            pb.SubmitAsyncRequest(model="echo-async", body=b"mine"),
            metadata=api_key(BATCH_KEY),
            timeout=30,
        )
        job_id = submitted.job.job_id
        mine = await _reads(sw, job_id, BATCH_KEY)
        theirs = await _reads(sw, job_id, READER_KEY)
        # Over REST too.
        url = f"http://127.0.0.1:{sw.server.rest_port}/v1/jobs/{job_id}"
        async with aiohttp.ClientSession() as session:
            async with session.get(url, headers={"x-api-key": READER_KEY}) as response:
                rest_theirs = (response.status, await response.json())
            async with session.get(url, headers={"x-api-key": BATCH_KEY}) as response:
                rest_mine = response.status
    assert [code for code, _ in mine] == [grpc.StatusCode.OK] * 3
    not_found = (grpc.StatusCode.NOT_FOUND, "JOB_NOT_FOUND")
    assert theirs == [not_found] * 3
    assert rest_mine == 200
    assert rest_theirs[0] == 404
    assert rest_theirs[1]["details"][0]["reason"] == "JOB_NOT_FOUND"


async def test_binding_survives_key_rotation(
    async_emulator: RunningEmulator, s3_url: str, keys: Path
) -> None:
    settings = _settings(async_emulator, s3_url, keys, [TEST_JOB_ID_KEY])
    async with start_sagewire(async_emulator.url, settings) as sw:
        submitted = await sw.inference.SubmitAsync(
            pb.SubmitAsyncRequest(model="echo-async", body=b"old key"),
            metadata=api_key(BATCH_KEY),
            timeout=30,
        )
    job_id = submitted.job.job_id
    # A new key signs; the old one still verifies: the old id keeps its owner.
    rotated = _settings(async_emulator, s3_url, keys, [NEW_KEY, TEST_JOB_ID_KEY])
    async with start_sagewire(async_emulator.url, rotated) as sw:
        assert (await _reads(sw, job_id, BATCH_KEY))[0] == (grpc.StatusCode.OK, "")
        assert (await _reads(sw, job_id, READER_KEY))[0] == (
            grpc.StatusCode.NOT_FOUND,
            "JOB_NOT_FOUND",
        )
        fresh = await sw.inference.SubmitAsync(
            pb.SubmitAsyncRequest(model="echo-async", body=b"new key"),
            metadata=api_key(READER_KEY),
            timeout=30,
        )
        assert (await _reads(sw, fresh.job.job_id, READER_KEY))[0] == (grpc.StatusCode.OK, "")
        assert (await _reads(sw, fresh.job.job_id, BATCH_KEY))[0][1] == "JOB_NOT_FOUND"
