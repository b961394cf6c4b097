"""One S3 object written from a stream of chunks, in bounded memory.

Why: a 1 GB async input must not pass through sagewire's memory. Chunks are copied into one of
two fixed part buffers as they arrive; a full buffer goes out as a multipart part while the
other fills, and botocore reads each part through a file view, so a part exists exactly once
in memory. The buffers are reused for the whole upload, so however large the object, this
upload holds at most 2 × part size (and the allocator sees no churn of large blocks). Inputs
smaller than one part become a single PUT.

Every call is bounded by `aws.read_timeout_s` of no progress (`within_read_timeout`): aiohttp
has no write timeout, and botocore sends PutObject and UploadPart with `Expect: 100-continue`,
for whose interim answer aiohttp waits with no read timeout either. An S3 that accepts the
connection and never answers kept an upload (and its route slot) forever. Progress is a part's
bytes being read for sending; after the last, the wait for the answer gets the read timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections.abc import Awaitable
from typing import Any

from botocore.exceptions import ReadTimeoutError

from sagewire.core.async_types import S3Location

log = logging.getLogger(__name__)

# Aborting an upload is cleanup after a failure: bounded, so shutdown never waits on it.
_ABORT_TIMEOUT_S = 10.0


class Progress:
    """When bytes last moved (time.monotonic()); set from aiohttp's reader thread too."""

    def __init__(self) -> None:
        self.at = time.monotonic()

    def tick(self) -> None:
        self.at = time.monotonic()


async def within_read_timeout[T](
    call: Awaitable[T], timeout_s: float, progress: Progress | None = None
) -> T:
    """`call`'s result, or botocore's ReadTimeoutError (mapped like any read timeout) once
    nothing moved for `timeout_s`; the call is cancelled then, and when the caller is."""
    progress = progress or Progress()
    task = asyncio.ensure_future(call)
    try:
        while True:
            left = progress.at + timeout_s - time.monotonic()
            if left <= 0:
                raise ReadTimeoutError(endpoint_url="S3 (no progress for aws.read_timeout_s)")
            done, _ = await asyncio.wait({task}, timeout=left)
            if done:
                return task.result()
    finally:
        if not task.done():
            task.cancel()
            # Read its end so it is not reported as never retrieved.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())


class _PartReader(io.RawIOBase):
    """A seekable, read-only file over a part's bytes, without copying them; every read for
    sending counts as progress."""

    def __init__(self, view: memoryview, progress: Progress | None = None) -> None:
        super().__init__()
        self._view = view
        self._pos = 0
        self.progress = progress or Progress()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        end = (
            len(self._view) if size is None or size < 0 else min(self._pos + size, len(self._view))
        )
        data = bytes(self._view[self._pos : end])
        self._pos = max(self._pos, end)
        self.progress.tick()
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        memoryview(buffer)[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos


class _PartBuffer:
    """A fixed-size buffer that fills with chunk bytes and is reused after its part is sent."""

    def __init__(self, capacity: int) -> None:
        self._data = bytearray(capacity)
        self.size = 0

    @property
    def full(self) -> bool:
        return self.size == len(self._data)

    def fill(self, chunk: memoryview) -> int:
        """Copy as much of `chunk` as fits; return how many bytes were taken."""
        taken = min(len(chunk), len(self._data) - self.size)
        self._data[self.size : self.size + taken] = chunk[:taken]
        self.size += taken
        return taken

    def reader(self) -> _PartReader:
        return _PartReader(memoryview(self._data)[: self.size])


def body_reader(body: bytes) -> _PartReader:
    """`body` as a file whose reads count as progress (for `within_read_timeout`)."""
    return _PartReader(memoryview(body))


class StreamingUpload:
    """Write one object from chunks: `write` each, then `finish`, or `abort` on failure.

    AWS failures propagate as raised by botocore; the caller maps them.
    """

    def __init__(
        self,
        client: Any,
        location: S3Location,
        content_type: str,
        part_bytes: int,
        read_timeout_s: float,
    ):
        self._client = client
        self._timeout = read_timeout_s
        self._location = location
        self._content_type = content_type
        self._part_bytes = part_bytes
        self._filling: _PartBuffer | None = None
        self._spare: _PartBuffer | None = None
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._in_flight: tuple[_PartBuffer, asyncio.Task[dict[str, Any]]] | None = None

    async def write(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:
            if self._filling is None:
                self._filling, self._spare = self._spare or _PartBuffer(self._part_bytes), None
            view = view[self._filling.fill(view) :]
            if self._filling.full:
                await self._send()

    async def finish(self) -> None:
        if self._upload_id is None:  # less than one part: a single PUT
            body = self._filling.reader() if self._filling else body_reader(b"")
            await within_read_timeout(
                self._client.put_object(
                    Bucket=self._location.bucket,
                    Key=self._location.key,
                    Body=body,
                    ContentType=self._content_type,
                ),
                self._timeout,
                body.progress,
            )
            return
        if self._filling is not None and self._filling.size:
            await self._send()
        await self._settle()
        await within_read_timeout(
            self._client.complete_multipart_upload(
                Bucket=self._location.bucket,
                Key=self._location.key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
            ),
            self._timeout,
        )
        self._upload_id = None

    async def _send(self) -> None:
        part, self._filling = self._filling, None
        assert part is not None
        if self._upload_id is None:
            created = await within_read_timeout(
                self._client.create_multipart_upload(
                    Bucket=self._location.bucket,
                    Key=self._location.key,
                    ContentType=self._content_type,
                ),
                self._timeout,
            )
            self._upload_id = str(created["UploadId"])
        await self._settle()
        number = len(self._parts) + 1
        self._in_flight = (part, asyncio.create_task(self._upload_part(number, part)))

    async def _upload_part(self, number: int, part: _PartBuffer) -> dict[str, Any]:
        body = part.reader()
        response = await within_read_timeout(
            self._client.upload_part(
                Bucket=self._location.bucket,
                Key=self._location.key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=body,
            ),
            self._timeout,
            body.progress,
        )
        return {"PartNumber": number, "ETag": response["ETag"]}

    async def _settle(self) -> None:
        """Wait for the part in flight; its buffer becomes the spare."""
        if self._in_flight is not None:
            (part, task), self._in_flight = self._in_flight, None
            self._parts.append(await task)
            part.size = 0
            self._spare = part

    async def abort(self) -> None:
        """Drop the parts uploaded so far (also when the caller was cancelled)."""
        if self._in_flight is not None:
            (_, task), self._in_flight = self._in_flight, None
            task.cancel()
            # Its own failure, if any, is superseded by the one being raised.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        if self._upload_id is None:
            return
        upload_id, self._upload_id = self._upload_id, None
        cleanup = asyncio.ensure_future(self._abort(upload_id))
        # Shielded: a cancelled caller must still not leave billed parts behind in S3.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(cleanup)

    async def _abort(self, upload_id: str) -> None:
        try:
            async with asyncio.timeout(_ABORT_TIMEOUT_S):
                await self._client.abort_multipart_upload(
                    Bucket=self._location.bucket, Key=self._location.key, UploadId=upload_id
                )
        except Exception:
            log.warning("could not abort a multipart upload to bucket %s", self._location.bucket)
