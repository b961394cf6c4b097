"""A 50 MB input streamed through sagewire running as its own process, with that process's
memory measured while the input goes up and the output comes back down. The job is also read
through the in-process sagewire: two processes sharing only configuration, one job."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import psutil
from async_support import STAGING_BUCKET
from processes import sagewire_process

from sagewire.emulator.server import RunningEmulator
from sagewire.v1 import async_jobs_pb2 as pb
from sagewire.v1 import inference_service_pb2_grpc
from support import TEST_JOB_ID_KEY, Sagewire

MiB = 1024 * 1024
PAYLOAD_BYTES = 50 * MiB
PART_BYTES = 5 * MiB
# The chunk size docs/async.md suggests for UploadAsync.
CHUNK_BYTES = 256 * 1024
# Two part buffers (one uploading, one filling) plus gRPC's 1 MiB receive window and HTTP
# buffers. Measured at 11-18 MiB on a 2-core runner; half the payload leaves a margin.
MAX_GROWTH_BYTES = PAYLOAD_BYTES // 2


class PeakRss:
    """Samples a process's RSS every few milliseconds in a thread; `peak` is the highest."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self._stop = threading.Event()
        self.peak = 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            self._stop.wait(0.005)

    @contextmanager
    def sampling(self) -> Iterator[None]:
        self.peak = self._process.memory_info().rss
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        try:
            yield
        finally:
            self._stop.set()
            thread.join()
            self._stop.clear()


def _config(path: Path, emulator_url: str, s3_url: str) -> Path:
    path.write_text(
        f"""
[aws]
runtime_endpoint_url = "{emulator_url}"
s3_endpoint_url = "{s3_url}"
max_attempts = 1

[async_jobs]
job_id_keys = ["{TEST_JOB_ID_KEY}"]
staging_bucket = "{STAGING_BUCKET}"
upload_part_bytes = {PART_BYTES}
watch_poll_initial_s = 0.05
watch_poll_max_s = 0.4

[routes.echo-async]
endpoint = "echo"
mode = "async"
content_type = "application/octet-stream"

[routes.echo-async.async]
output_prefix = "s3://sagewire-emulator/async-output/"
failure_prefix = "s3://sagewire-emulator/async-failures/"
""",
        encoding="utf-8",
    )
    return path


async def _upload(
    stub: inference_service_pb2_grpc.InferenceServiceAsyncStub, data: bytes
) -> pb.UploadAsyncResponse:
    async def requests() -> AsyncIterator[pb.UploadAsyncRequest]:
        yield pb.UploadAsyncRequest(header=pb.UploadAsyncHeader(model="echo-async"))
        for at in range(0, len(data), CHUNK_BYTES):
            yield pb.UploadAsyncRequest(chunk=data[at : at + CHUNK_BYTES])

    response: pb.UploadAsyncResponse = await stub.UploadAsync(requests(), timeout=60)
    return response


async def _completed(watcher: Sagewire, job_id: str) -> None:
    watch = watcher.inference.WatchAsync(pb.WatchAsyncRequest(job_id=job_id), timeout=30)
    assert [update.state async for update in watch][-1] == pb.ASYNC_STATE_COMPLETED


async def _read_all(
    stub: inference_service_pb2_grpc.InferenceServiceAsyncStub, job_id: str
) -> tuple[int, bytes]:
    """The job's output streamed from `stub`: its size and SHA-256."""
    digest = hashlib.sha256()
    size = 0
    call = stub.ReadAsyncOutput(pb.ReadAsyncOutputRequest(job_id=job_id), timeout=60)
    async for message in call:
        digest.update(message.chunk)
        size += len(message.chunk)
    return size, digest.digest()


async def test_50mb_upload_and_download_keep_sagewire_memory_bounded(
    async_emulator: RunningEmulator, s3_url: str, async_sagewire: Sagewire, tmp_path: Path
) -> None:
    data = os.urandom(PAYLOAD_BYTES)
    config = _config(tmp_path / "sagewire.toml", async_emulator.url, s3_url)
    with sagewire_process("serve", "--config", str(config)) as process:
        rss = PeakRss(process.popen.pid)
        async with grpc.aio.insecure_channel(process.target) as channel:
            stub = inference_service_pb2_grpc.InferenceServiceStub(channel)
            # One-time costs (botocore loading the multipart operations, allocator arenas)
            # stay out of the numbers: a warm-up of two parts takes the same code path.
            warm = await _upload(stub, os.urandom(2 * PART_BYTES))
            await _completed(async_sagewire, warm.job.job_id)
            await _read_all(stub, warm.job.job_id)

            baseline = psutil.Process(process.popen.pid).memory_info().rss
            with rss.sampling():
                uploaded = await _upload(stub, data)
            upload_growth = rss.peak - baseline
            assert uploaded.input_size == PAYLOAD_BYTES

            # Submitted on the process, watched through the in-process replica.
            await _completed(async_sagewire, uploaded.job.job_id)

            baseline = psutil.Process(process.popen.pid).memory_info().rss
            with rss.sampling():
                size, digest = await _read_all(stub, uploaded.job.job_id)
            download_growth = rss.peak - baseline

    assert size == PAYLOAD_BYTES
    assert digest == hashlib.sha256(data).digest()
    growth = f"upload {upload_growth / MiB:.1f} MiB, download {download_growth / MiB:.1f} MiB"
    print(f"sagewire RSS growth for {PAYLOAD_BYTES // MiB} MiB: {growth}")  # shown with -s
    assert upload_growth < MAX_GROWTH_BYTES, f"upload grew RSS by {upload_growth / MiB:.1f} MiB"
    assert download_growth < MAX_GROWTH_BYTES, (
        f"download grew RSS by {download_growth / MiB:.1f} MiB"
    )
