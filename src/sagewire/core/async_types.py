"""Plain data of async inference, passed between the transports, the core and the adapters."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum

# Keys are limited to printable ASCII: they travel in HTTP headers (InputLocation).
_S3_URI = re.compile(r"^s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/([\x21-\x7e][\x20-\x7e]*)$")


@dataclass(frozen=True, slots=True)
class S3Location:
    """One S3 object, `s3://bucket/key`."""

    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str) -> S3Location | None:
        """The location `uri` names, or None when it is not `s3://<bucket>/<key>`."""
        match = _S3_URI.match(uri)
        return cls(match.group(1), match.group(2)) if match else None

    def under(self, prefix: str) -> bool:
        """True when this object lies under `prefix` (`s3://bucket/` or `s3://bucket/p/`)."""
        return str(self).startswith(prefix)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


class JobState(StrEnum):
    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"

    @property
    def terminal(self) -> bool:
        return self is not JobState.PENDING


@dataclass(frozen=True, slots=True)
class AsyncCall:
    """A caller's async submission, before route resolution (the input travels separately)."""

    model: str
    content_type: str = ""
    accept: str = ""
    custom_attributes: str = ""
    inference_id: str = ""
    # 0 = the route's default.
    request_ttl_seconds: int = 0
    invocation_timeout_seconds: int = 0
    time_remaining_s: float | None = None


@dataclass(frozen=True, slots=True)
class AsyncEndpointRequest:
    """A validated InvokeEndpointAsync request, ready for the SageMaker adapter."""

    endpoint: str
    input_location: str
    content_type: str
    accept: str
    custom_attributes: str
    inference_id: str
    request_ttl_seconds: int
    invocation_timeout_seconds: int


@dataclass(frozen=True, slots=True)
class AsyncAccepted:
    """What InvokeEndpointAsync answered. `failure_location` is "" when SageMaker sent none."""

    inference_id: str
    output_location: str
    failure_location: str


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """An S3 object's metadata."""

    size: int
    content_type: str


@dataclass(frozen=True, slots=True)
class ObjectStream:
    """An S3 object being read: metadata first, then its bytes in order."""

    info: ObjectInfo
    chunks: AsyncIterator[bytes]


@dataclass(frozen=True, slots=True)
class JobStatus:
    """A job's state as observed now. `output` is set when COMPLETED."""

    state: JobState
    observed_at: float
    output: ObjectInfo | None = None
    failure_reason: str = ""


@dataclass(frozen=True, slots=True)
class JobResult:
    """GetAsyncResult's answer. `body` is None when the output is too large to inline."""

    status: JobStatus
    expires_at: int
    body: bytes | None = None
