"""S3 on aioboto3 for async inference: staging inputs, probing and streaming results.

Memory stays bounded by a few part sizes whatever the object size: uploads go out as multipart
parts while the next part fills (at most one part in flight, one filling), and reads are
relayed chunk by chunk. Every failure is translated by sagewire.aws.errors.map_s3_error.
Uploads are bounded by `aws.read_timeout_s` of no progress (sagewire.aws.s3_upload); reads
by the client's read timeout.

The client honours `aws.s3_endpoint_url`, else the standard AWS_ENDPOINT_URL_S3 /
AWS_ENDPOINT_URL variables (moto's server in tests and `sagewire local`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from botocore.exceptions import ClientError

from sagewire.aws.client import SharedClient
from sagewire.aws.error_table import Phase
from sagewire.aws.errors import AWS_FAILURES, map_s3_error
from sagewire.aws.s3_upload import StreamingUpload, body_reader, within_read_timeout
from sagewire.config.settings import AwsSettings
from sagewire.core.async_types import ObjectInfo, ObjectStream, S3Location

_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})


def _missing(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code", "")) in _MISSING


def _info(response: dict[str, Any]) -> ObjectInfo:
    return ObjectInfo(
        size=int(response.get("ContentLength", 0)),
        content_type=str(response.get("ContentType", "")),
    )


class S3Store(SharedClient):
    """The shared S3 client. Use as an async context manager."""

    def __init__(self, settings: AwsSettings, part_bytes: int, chunk_bytes: int) -> None:
        super().__init__("s3", settings.s3_endpoint_url, settings)
        self._part_bytes = part_bytes
        self._chunk_bytes = chunk_bytes

    async def put(self, location: S3Location, body: bytes, content_type: str) -> None:
        reader = body_reader(body)
        try:
            await within_read_timeout(
                self._client.put_object(
                    Bucket=location.bucket, Key=location.key, Body=reader, ContentType=content_type
                ),
                self._settings.read_timeout_s,
                reader.progress,
            )
        except AWS_FAILURES as exc:
            raise map_s3_error(exc, location) from exc

    async def put_stream(
        self, location: S3Location, chunks: AsyncIterator[bytes], content_type: str
    ) -> int:
        upload = StreamingUpload(
            self._client, location, content_type, self._part_bytes, self._settings.read_timeout_s
        )
        total = 0
        try:
            async for chunk in chunks:
                total += len(chunk)
                await upload.write(chunk)
            await upload.finish()
        except BaseException as exc:
            await upload.abort()
            if isinstance(exc, AWS_FAILURES):
                raise map_s3_error(exc, location) from exc
            raise
        return total

    async def head(self, location: S3Location) -> ObjectInfo | None:
        try:
            response = await self._client.head_object(Bucket=location.bucket, Key=location.key)
        except ClientError as exc:
            if _missing(exc):
                return None
            raise map_s3_error(exc, location) from exc
        except AWS_FAILURES as exc:
            raise map_s3_error(exc, location) from exc
        return _info(response)

    async def read(self, location: S3Location, limit: int) -> bytes | None:
        try:
            response = await self._client.get_object(
                Bucket=location.bucket, Key=location.key, Range=f"bytes=0-{limit - 1}"
            )
        except ClientError as exc:
            if _missing(exc):
                return None
            raise map_s3_error(exc, location) from exc
        except AWS_FAILURES as exc:
            raise map_s3_error(exc, location) from exc
        try:
            async with response["Body"] as body:
                data: bytes = await body.read()
        except AWS_FAILURES as exc:
            raise map_s3_error(exc, location, Phase.RECEIVING) from exc
        return data

    @asynccontextmanager
    async def open(self, location: S3Location) -> AsyncIterator[ObjectStream | None]:
        try:
            response = await self._client.get_object(Bucket=location.bucket, Key=location.key)
        except ClientError as exc:
            if _missing(exc):
                yield None
                return
            raise map_s3_error(exc, location) from exc
        except AWS_FAILURES as exc:
            raise map_s3_error(exc, location) from exc
        body = response["Body"]
        try:
            yield ObjectStream(_info(response), self._relay(body, location))
        finally:
            # Closing drops the connection: a reader who leaves early stops the download.
            with contextlib.suppress(Exception):
                body.close()

    async def _relay(self, body: Any, location: S3Location) -> AsyncIterator[bytes]:
        try:
            async for chunk in body.iter_chunks(self._chunk_bytes):
                yield chunk
        except AWS_FAILURES as exc:
            raise map_s3_error(exc, location, Phase.RECEIVING) from exc
