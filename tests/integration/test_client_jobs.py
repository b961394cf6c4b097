"""sagewire.client's async-job calls end to end: client → sagewire → S3 (moto) + the emulator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from async_support import async_settings

from sagewire.client import AsyncClient, Client, InvalidArgument, JobState, NotFound
from sagewire.emulator.server import RunningEmulator
from support import Sagewire, start_sagewire

MiB = 1024 * 1024

FAST = {"custom_attributes": "delay_ms=0"}


async def test_submit_wait_get(async_sagewire: Sagewire) -> None:
    async with AsyncClient(async_sagewire.target, timeout=20) as client:
        job = await client.submit("slow-echo", json={"id": 9223372036854775807}, options=FAST)
        assert job.model == "slow-echo"
        assert job.job_id
        assert job.expires_at is not None
        result = await client.wait(job.job_id, timeout=20)
        assert result.state is JobState.COMPLETED
        assert result.output_inlined
        assert result.json() == {"id": 9223372036854775807}
        assert (await client.get(job.job_id)).state is JobState.COMPLETED


async def test_watch_sees_pending_then_completed(async_sagewire: Sagewire) -> None:
    async with AsyncClient(async_sagewire.target, timeout=20) as client:
        job = await client.submit(
            "slow-echo", body=b"x", options={"custom_attributes": "delay_ms=300"}
        )
        states = [event.state async for event in client.watch(job.job_id, timeout=20)]
    assert states[0] is JobState.PENDING
    assert states[-1] is JobState.COMPLETED


async def test_failed_job_has_its_reason(async_sagewire: Sagewire) -> None:
    async with AsyncClient(async_sagewire.target, timeout=20) as client:
        job = await client.submit(
            "slow-echo", body=b"{}", options={"custom_attributes": "delay_ms=0;fail=boom on p7"}
        )
        result = await client.wait(job.job_id, timeout=20)
    assert result.state is JobState.FAILED
    assert "boom on p7" in result.failure_reason


async def test_upload_a_file_with_progress_and_read_it_back_to_a_file(
    async_sagewire: Sagewire, tmp_path: Path
) -> None:
    source = tmp_path / "input.bin"
    source.write_bytes(bytes(range(256)) * (6 * 4096 + 7))  # ~6 MiB: several chunks and parts
    seen: list[tuple[int, int | None]] = []
    async with AsyncClient(async_sagewire.target, timeout=60) as client:
        job = await client.upload("echo-async", source, progress=lambda d, t: seen.append((d, t)))
        assert job.input_size == source.stat().st_size
        assert seen[-1] == (source.stat().st_size, source.stat().st_size)
        result = await client.wait(job.job_id, timeout=60)
        assert result.state is JobState.COMPLETED
        assert not result.output_inlined
        target = tmp_path / "out" / "output.bin"
        target.parent.mkdir()
        written = await client.read_output(job.job_id, to=target)
    assert written == source.stat().st_size
    assert target.read_bytes() == source.read_bytes()
    assert not (tmp_path / "out" / "output.bin.part").exists()


async def test_upload_from_an_async_iterable_returns_bytes_when_read(
    async_sagewire: Sagewire,
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for n in range(3):
            yield f"chunk{n};".encode()

    async with AsyncClient(async_sagewire.target, timeout=20) as client:
        job = await client.upload("echo-async", chunks())
        await client.wait(job.job_id, timeout=20)
        assert await client.read_output(job.job_id) == b"chunk0;chunk1;chunk2;"


async def test_job_errors(async_sagewire: Sagewire) -> None:
    async with AsyncClient(async_sagewire.target, timeout=20) as client:
        with pytest.raises(InvalidArgument):
            await client.get("not-a-job-id")
        with pytest.raises(NotFound):
            await client.submit("no-such-model", body=b"x")
        with pytest.raises(TypeError):
            await client.submit("slow-echo", body=b"x", input_location="s3://b/k")


async def test_blocking_client_jobs(async_sagewire: Sagewire) -> None:
    def calls() -> JobState:
        with Client(async_sagewire.target, timeout=20) as client:
            job = client.submit("slow-echo", json={"a": 1}, options=FAST)
            states = [event.state for event in client.watch(job.job_id, timeout=20)]
            assert states[-1] is JobState.COMPLETED
            return client.wait(job.job_id, timeout=20).state

    assert await asyncio.to_thread(calls) is JobState.COMPLETED


async def test_an_over_size_upload_reports_sagewires_status_every_time(
    async_emulator: RunningEmulator, s3_url: str
) -> None:
    # sagewire refuses the upload once it passes 1 MiB while the client still has most of its
    # 64 MiB to send: the send then fails in gRPC core and grpc.aio may set its own INTERNAL
    # "Internal error from Core" on the call (docs/errors.md). Before the client recovered
    # sagewire's status, 2-5 of 60 such uploads ended so on a quiet machine, 10 of 30 on a
    # loaded one; this test failed 3 runs of 3 then.
    settings = async_settings(s3_url, max_input_bytes=MiB)
    async with (
        start_sagewire(async_emulator.url, **settings) as sw,
        AsyncClient(sw.target, timeout=60) as client,
    ):
        for _ in range(100):
            with pytest.raises(InvalidArgument) as refused:
                await client.upload("echo-async", [b"\0" * MiB] * 64)
            assert refused.value.reason == "PAYLOAD_TOO_LARGE"
            assert str(MiB) in str(refused.value)
