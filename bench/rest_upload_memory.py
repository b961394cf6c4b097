"""Memory of a large UploadAsync over the REST bridge: `POST /v1/models/{model}:uploadAsync`
with a 500 MB chunked body, sagewire as its own process, its RSS sampled every 5 ms.

    python -m bench.rest_upload_memory [--mib 500]

Starts moto's S3 and the emulator in this process and `sagewire serve` as a child (REST on a
free port), warms the upload path up with a two-part upload (botocore's multipart operations,
allocator arenas), then streams the input from a 1 MiB block repeated (never held whole here
either) and prints the peak RSS growth of the sagewire process over its pre-upload RSS. The
target (issue 11): < 32 MiB for 500 MB. Bounded: every step has a timeout, the child is
stopped on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import psutil

from bench.services import REPO, base_env, spawn, stop
from sagewire.emulator.config import EmulatorConfig, EndpointConfig
from sagewire.emulator.s3_server import create_buckets, running_s3
from sagewire.emulator.server import running_emulator

MiB = 1024 * 1024
PART_BYTES = 8 * MiB  # async_jobs.upload_part_bytes default
BUCKET = "sagewire-staging"
KEY = "YmVuY2gtb25seS1qb2ItaWQta2V5LTMyLWJ5dGVzLWxvbmc="
REST = re.compile(r"sagewire REST bridge on (\S+)")
TARGET_MIB = 32


def _config(path: Path, emulator_url: str, s3_url: str) -> Path:
    path.write_text(
        f"""
[aws]
runtime_endpoint_url = "{emulator_url}"
s3_endpoint_url = "{s3_url}"
max_attempts = 1

[async_jobs]
job_id_keys = ["{KEY}"]
staging_bucket = "{BUCKET}"
upload_part_bytes = {PART_BYTES}

[routes.upload]
endpoint = "echo"
mode = "async"
content_type = "application/octet-stream"

[routes.upload.async]
output_prefix = "s3://sagewire-emulator/async-output/"
failure_prefix = "s3://sagewire-emulator/async-failures/"
""",
        encoding="utf-8",
    )
    return path


class PeakRss:
    """A thread sampling one process's RSS every 5 ms; `peak` is the highest seen."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self._stop = threading.Event()
        self.peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            self._stop.wait(0.005)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def _body(total: int) -> AsyncIterator[bytes]:
    block = os.urandom(MiB)
    for _ in range(total // MiB):
        yield block


async def _upload(http: aiohttp.ClientSession, url: str, total: int) -> dict[str, object]:
    async with http.post(url, data=_body(total)) as response:
        answer: dict[str, object] = await response.json()
        if response.status != 200:
            raise RuntimeError(f"upload failed: {response.status} {answer}")
    return answer


async def main(mib: int) -> None:
    # This process's S3 and emulator clients: dummy credentials, as for the child.
    os.environ.update({k: v for k, v in base_env().items() if k.startswith("AWS_")})
    with running_s3() as s3_url, tempfile.TemporaryDirectory() as tmp:
        await create_buckets(s3_url, [BUCKET])
        config = EmulatorConfig(endpoints={"echo": EndpointConfig(model="echo")})
        async with running_emulator(config, s3_endpoint_url=s3_url) as emulator:
            path = _config(Path(tmp) / "sagewire.toml", emulator.url, s3_url)
            env = {
                **base_env(emulator.url),
                "SAGEWIRE_SERVER__LISTEN": "127.0.0.1:0",
                "SAGEWIRE_REST__LISTEN": "127.0.0.1:0",
            }
            process = await spawn(
                [str(REPO / ".venv" / "bin" / "sagewire"), "serve", "--config", str(path)], env
            )
            try:
                assert process.stdout is not None
                async with asyncio.timeout(60):
                    while True:
                        line = (await process.stdout.readline()).decode()
                        if not line:  # sagewire exited (e.g. a configuration error): say so
                            raise RuntimeError(f"sagewire serve exited: {process.returncode}")
                        if found := REST.search(line):
                            break
                url = f"{found.group(1)}/v1/models/upload:uploadAsync"
                timeout = aiohttp.ClientTimeout(total=1800)
                async with aiohttp.ClientSession(timeout=timeout) as http:
                    await _upload(http, url, 2 * PART_BYTES)  # warm-up
                    rss = psutil.Process(process.pid)
                    baseline = rss.memory_info().rss
                    started = time.perf_counter()
                    with PeakRss(process.pid) as peak:
                        answer = await _upload(http, url, mib * MiB)
                    elapsed = time.perf_counter() - started
                growth = (peak.peak - baseline) / MiB
                print(f"uploaded {answer['inputSize']} bytes in {elapsed:.1f} s")
                print(
                    f"sagewire RSS: before {baseline / MiB:.1f} MiB, peak {peak.peak / MiB:.1f} "
                    f"MiB, growth {growth:.1f} MiB (target < {TARGET_MIB} MiB)"
                )
            finally:
                await stop(process)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=500, help="upload size in MiB")
    asyncio.run(main(parser.parse_args().mib))
