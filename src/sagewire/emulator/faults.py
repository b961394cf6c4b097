"""Fault injection: what can go wrong on an endpoint, as data.

Why: the gateway's error mapping, retries, deadlines, admission and stream handling can only be
tested against failures that happen on the wire. A ``Fault`` is plain, validated data (loaded
from TOML, PUT over the admin API, or built in a test and swapped in with
``emulator.set_fault``); ``error_for`` turns its ``error`` into the exact SageMaker error
response, and ``fault_run.ActiveFault`` decides per call (cold start, error rate, latency draw).

Request-level faults (``cold_for_s``/``cold_for_calls``, ``latency_ms``/``latency``, ``error``
with ``error_rate``/``error_first_calls``) apply to every invocation (InvokeEndpoint, the
response stream, the bidirectional stream, InvokeEndpointAsync) before any response byte.
Stream faults (``*_after_parts``, ``part_delay_ms``) apply to the response stream and the
bidirectional stream, where N counts the parts the emulator sent; ``close_after_parts`` only to
the bidirectional stream.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sagewire.emulator import errors
from sagewire.emulator.errors import ApiError

ErrorKind = Literal[
    "model_error",
    "model_timeout",
    "model_not_ready",
    "service_unavailable",
    "throttling",
    "internal_failure",
    "internal_dependency",
    "validation",
    "connection_drop",
]
StreamErrorKind = Literal["model_stream_error", "internal_stream_failure"]
StreamErrorCode = Literal["ModelInvocationTimeExceeded", "StreamBroken"]


class FixedLatency(BaseModel):
    """Every call waits ``ms``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    distribution: Literal["fixed"]
    ms: float = Field(ge=0, le=600_000)


class UniformLatency(BaseModel):
    """Each call waits a uniform draw from [``min_ms``, ``max_ms``]."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    distribution: Literal["uniform"]
    min_ms: float = Field(ge=0, le=600_000)
    max_ms: float = Field(ge=0, le=600_000)

    @model_validator(mode="after")
    def _ordered(self) -> UniformLatency:
        if self.max_ms < self.min_ms:
            raise ValueError("max_ms must be >= min_ms")
        return self


class LognormalLatency(BaseModel):
    """Each call waits a lognormal draw: ``exp(N(ln(median_ms), sigma))`` ms, at most
    ``max_ms`` (service latencies are right-skewed; ``sigma`` 0.5 puts p99 at about 3.2x the
    median, ``exp(2.326 * sigma)``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    distribution: Literal["lognormal"]
    median_ms: float = Field(gt=0, le=600_000)
    sigma: float = Field(ge=0, le=5)
    max_ms: float = Field(default=60_000, gt=0, le=600_000)


Latency = Annotated[
    FixedLatency | UniformLatency | LognormalLatency, Field(discriminator="distribution")
]


class Fault(BaseModel):
    """One endpoint's injected misbehaviour. All fields are optional; the default is healthy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cold_for_s: float | None = Field(
        default=None,
        ge=0,
        le=86_400,
        description="Answer ModelNotReadyException for N seconds after the fault takes effect "
        "(emulator start, set_fault / PUT, reset), then serve.",
    )
    cold_for_calls: int | None = Field(
        default=None,
        ge=0,
        description="Answer ModelNotReadyException to the first N calls after the fault takes "
        "effect, then serve.",
    )
    latency_ms: int = Field(default=0, ge=0, description="Added before the model runs.")
    latency: Latency | None = Field(
        default=None, description="A latency distribution drawn per call (instead of latency_ms)."
    )
    error: ErrorKind | None = Field(default=None, description="Answer calls with this error.")
    error_rate: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="The fraction of calls that get `error` (drawn per call); None: every call.",
    )
    seed: int | None = Field(
        default=None,
        description="Seeds the per-call draws (error_rate, latency) so a run can be repeated; "
        "None: a fresh random seed each time the fault takes effect.",
    )
    message: str | None = Field(default=None, description="Override the error's Message.")
    error_first_calls: int | None = Field(
        default=None,
        ge=0,
        description="Only the first N calls after the fault takes effect get `error`, later "
        "ones succeed (a brief outage); None: every call.",
    )
    original_status: int = Field(
        default=500, ge=100, le=599, description="model_error: container status"
    )
    original_message: str = Field(
        default="Internal server error", description="model_error: the container's message"
    )
    timeout_after_ms: int = Field(
        default=60_000,
        ge=0,
        description="model_timeout: how long the emulator waits before answering",
    )
    stream_error_after_parts: int | None = Field(default=None, ge=0)
    stream_error: StreamErrorKind = "model_stream_error"
    stream_error_code: StreamErrorCode = "ModelInvocationTimeExceeded"
    stall_after_parts: int | None = Field(
        default=None, ge=0, description="Stop sending after N parts, keep the connection open."
    )
    drop_after_parts: int | None = Field(
        default=None, ge=0, description="Abort the TCP connection after N parts."
    )
    part_delay_ms: int = Field(default=0, ge=0, description="Sleep before each PayloadPart.")
    close_after_parts: int | None = Field(
        default=None,
        ge=0,
        description="Bidirectional streams: end the response after N parts, input still open.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Fault:
        if self.latency is not None and self.latency_ms:
            raise ValueError("set latency_ms or latency, not both")
        if self.error_rate is not None and self.error is None:
            raise ValueError("error_rate needs an error to inject")
        if self.cold_for_s is not None and self.cold_for_calls is not None:
            raise ValueError("set cold_for_s or cold_for_calls, not both")
        return self

    @model_validator(mode="after")
    def _one_stream_ending(self) -> Fault:
        endings = [
            name
            for name in (
                "stream_error_after_parts",
                "stall_after_parts",
                "drop_after_parts",
                "close_after_parts",
            )
            if getattr(self, name) is not None
        ]
        if len(endings) > 1:
            raise ValueError(f"set at most one of {', '.join(endings)}")
        return self


class DropConnection(Exception):
    """The injected ``connection_drop``: abort the TCP connection without answering."""


def error_for(fault: Fault, endpoint: str) -> ApiError | None:
    """The error response ``fault.error`` stands for (None when no error is configured, and
    for ``connection_drop``, which has no response: see ``DropConnection``).

    ``model_timeout`` returns the error only; the caller waits ``timeout_after_ms`` first.
    """
    match fault.error:
        case None | "connection_drop":
            return None
        case "model_error":
            return errors.model_error(
                endpoint, fault.original_status, fault.original_message, message=fault.message
            )
        case "model_timeout":
            err = errors.model_timeout(endpoint)
            err.message = fault.message or err.message
            return err
        case _:
            return errors.simple_error(fault.error, fault.message)
