"""Fault injection: what can go wrong on an endpoint, as data.

Why: the gateway's error mapping, retries, deadlines and stream handling can only be tested
against failures that happen on the wire. A ``Fault`` is plain, validated data (loaded from
TOML or built in a test and swapped in with ``emulator.set_fault``); ``error_for`` turns its
``error`` into the exact SageMaker error response.

Request-level faults (``latency_ms``, ``error``) apply to both InvokeEndpoint and
InvokeEndpointWithResponseStream, before any response byte. Stream faults (``*_after_parts``,
``part_delay_ms``) apply to the response stream and the bidirectional stream, where N counts
the parts the emulator sent; ``close_after_parts`` only to the bidirectional stream.
"""

from __future__ import annotations

import asyncio
from typing import Literal

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
]
StreamErrorKind = Literal["model_stream_error", "internal_stream_failure"]
StreamErrorCode = Literal["ModelInvocationTimeExceeded", "StreamBroken"]


class Fault(BaseModel):
    """One endpoint's injected misbehaviour. All fields are optional; the default is healthy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    latency_ms: int = Field(default=0, ge=0, description="Added before the model runs.")
    error: ErrorKind | None = Field(default=None, description="Answer every call with this error.")
    message: str | None = Field(default=None, description="Override the error's Message.")
    error_first_calls: int | None = Field(
        default=None,
        ge=0,
        description="Only the endpoint's first N invocations get `error`, later ones succeed "
        "(a brief outage or a cold start); None: every call.",
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


def error_for(fault: Fault, endpoint: str) -> ApiError | None:
    """The error response ``fault.error`` stands for (None when no error is configured).

    ``model_timeout`` returns the error only; the caller waits ``timeout_after_ms`` first.
    """
    match fault.error:
        case None:
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


async def apply_request_fault(fault: Fault, endpoint: str, call_number: int = 1) -> None:
    """Before the model runs: the added latency, then the injected error, if any (a model
    timeout answers only after `timeout_after_ms`, as SageMaker answers after its 60 s).
    `call_number` counts the endpoint's invocations from 1, for `error_first_calls`."""
    if fault.latency_ms:
        await asyncio.sleep(fault.latency_ms / 1000)
    if fault.error_first_calls is not None and call_number > fault.error_first_calls:
        return
    err = error_for(fault, endpoint)
    if err is not None:
        if fault.error == "model_timeout":
            await asyncio.sleep(fault.timeout_after_ms / 1000)
        raise err
