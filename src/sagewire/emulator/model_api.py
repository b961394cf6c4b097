"""The small interface every emulated model implements (``Model``) and what passes through it.

A model is anything with ``async def invoke(request) -> ModelReply``; it signals "the container
answered with an error" by raising ``ModelFailure``. A module of its own so the demo models
(``models``, ``bidi_models``, ``slow_echo``, ``container``) and the HTTP layer all build on it
without importing each other.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Protocol

DEFAULT_CONTENT_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class ModelRequest:
    """What SageMaker passes on to a model container (plus where the call came in)."""

    endpoint: str
    variant: str
    body: bytes
    streaming: bool
    content_type: str | None = None
    accept: str | None = None
    custom_attributes: str | None = None
    target_model: str | None = None
    target_container_hostname: str | None = None
    inference_id: str | None = None
    enable_explanations: str | None = None
    inference_component: str | None = None
    session_id: str | None = None


@dataclass
class ModelReply:
    """A model's answer: metadata known up front, then the body as it is produced."""

    chunks: AsyncGenerator[bytes, None]  # closed early if the client goes away
    content_type: str = DEFAULT_CONTENT_TYPE
    custom_attributes: str | None = None
    new_session_id: str | None = None
    closed_session_id: str | None = None


class ModelFailure(Exception):
    """The model container failed: ``status`` None means it gave no answer at all."""

    def __init__(self, status: int | None, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.timed_out = timed_out


class Model(Protocol):
    async def invoke(self, request: ModelRequest) -> ModelReply: ...
