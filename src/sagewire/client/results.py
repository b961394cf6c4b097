"""What the client's calls return: plain, typed values instead of protobuf messages.

`.json()` always parses the exact bytes the model sent (`body`) with Python's json module, so
64-bit integers and long decimals come back exactly. The client asks sagewire for
RESPONSE_VIEW_BODY, so answers arrive without the protobuf `json` view (doubles); a view is
used only when a message carries one and no body.
"""

from __future__ import annotations

import json as jsonlib
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2

from sagewire.v1 import async_jobs_pb2, model_service_pb2


def _parse(body: bytes, view: struct_pb2.Value | None) -> Any:
    if body or view is None:
        return jsonlib.loads(body)
    return json_format.MessageToDict(view)


def _time(stamp: timestamp_pb2.Timestamp) -> datetime | None:
    return stamp.ToDatetime().astimezone() if stamp.seconds or stamp.nanos else None


class _Body:
    """`.json()` and `.text` of a result's body (shared by the result classes below)."""

    body: bytes
    _view: struct_pb2.Value | None

    def json(self) -> Any:
        """The body parsed as JSON (raises json.JSONDecodeError when it is not JSON)."""
        return _parse(self.body, self._view)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class InvokeResult(_Body):
    """A model's answer to `invoke`.

    Attributes:
        body: the response exactly as the model returned it.
        content_type: its MIME type, as the model reported it.
        variant: the production variant that served the call.
        custom_attributes: custom attributes the model returned ("" when none).
        new_session_id / closed_session_id: SageMaker stateful session changes ("" when none).
        endpoint: the SageMaker endpoint that answered: the route's own or one of its
            fallbacks (docs/resilience.md).
    """

    body: bytes
    content_type: str
    variant: str
    custom_attributes: str = ""
    new_session_id: str = ""
    closed_session_id: str = ""
    _view: struct_pb2.Value | None = None
    endpoint: str = ""


@dataclass(frozen=True)
class StreamPart(_Body):
    """One message of `stream`: a record (lines/sse framing) or a PayloadPart (raw)."""

    body: bytes
    index: int
    _view: struct_pb2.Value | None = None


@dataclass(frozen=True)
class Chunk(_Body):
    """Part of a Converse turn's answer."""

    turn_id: str
    body: bytes
    partial: bool = False
    _view: struct_pb2.Value | None = None


@dataclass(frozen=True)
class TurnEnd:
    """How a Converse turn finished."""

    turn_id: str
    variant: str
    chunk_count: int
    byte_count: int
    # The SageMaker endpoint that answered: the route's own or a fallback (docs/resilience.md).
    endpoint: str = ""


class JobState(StrEnum):
    """Lifecycle of an async job (sagewire.v1.AsyncState without the prefix)."""

    PENDING = "PENDING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    EXPIRED = "EXPIRED"

    @property
    def terminal(self) -> bool:
        return self is not JobState.PENDING

    @classmethod
    def of(cls, state: async_jobs_pb2.AsyncState.ValueType) -> JobState:
        return cls(async_jobs_pb2.AsyncState.Name(state).removeprefix("ASYNC_STATE_"))


@dataclass(frozen=True)
class Job:
    """A submitted async job; `job_id` is the handle every other job call takes."""

    job_id: str
    inference_id: str
    model: str
    submitted_at: datetime | None
    expires_at: datetime | None
    input_size: int | None = None

    @classmethod
    def of(cls, job: async_jobs_pb2.AsyncJob, input_size: int | None = None) -> Job:
        return cls(
            job.job_id,
            job.inference_id,
            job.model,
            _time(job.submitted_at),
            _time(job.expires_at),
            input_size,
        )


@dataclass(frozen=True)
class JobResult(_Body):
    """A job's state and, when small enough, its output (`read_output` reads any size)."""

    state: JobState
    body: bytes
    content_type: str
    output_size: int
    output_inlined: bool
    failure_reason: str
    expires_at: datetime | None
    _view: struct_pb2.Value | None = None

    @classmethod
    def of(cls, answer: async_jobs_pb2.GetAsyncResultResponse) -> JobResult:
        return cls(
            JobState.of(answer.state),
            answer.body,
            answer.content_type,
            answer.output_size,
            not answer.output_not_inlined,
            answer.failure_reason,
            _time(answer.expires_at),
            answer.json if answer.HasField("json") else None,
        )


@dataclass(frozen=True)
class JobEvent:
    """A state a watched job entered."""

    state: JobState
    observed_at: datetime | None
    failure_reason: str


@dataclass(frozen=True)
class ModelInfo:
    """A route callers can use (ModelService): its name, mode and what it accepts."""

    name: str
    mode: str
    endpoint_name: str
    description: str
    allowed_options: tuple[str, ...]
    endpoint_status: str
    timeout_s: float | None

    @classmethod
    def of(cls, model: model_service_pb2.Model) -> ModelInfo:
        mode = model_service_pb2.RouteMode.Name(model.mode).removeprefix("ROUTE_MODE_").lower()
        timeout = model.timeout.ToTimedelta().total_seconds() if model.HasField("timeout") else None
        return cls(
            model.name,
            mode,
            model.endpoint_name,
            model.description,
            tuple(model.allowed_options),
            model.endpoint_status,
            timeout,
        )
