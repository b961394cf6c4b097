"""What goes into a Converse session (the opening and the client's messages) and what comes out
(events), shared by the session core, its `bidi` relay and the transports."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

from sagewire.config.settings import StreamFraming
from sagewire.core.errors import SagewireError
from sagewire.core.types import BidiDataType, InvocationOptions

# -- what the transport hands in ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConverseStart:
    """The client's opening message: route and what applies to every turn."""

    model: str
    options: InvocationOptions = field(default_factory=InvocationOptions)
    content_type: str = ""
    accept: str = ""
    framing: StreamFraming | None = None
    # Seconds left before the caller's deadline for the whole stream; None when none was set.
    time_remaining_s: float | None = None


@dataclass(frozen=True, slots=True)
class Turn:
    turn_id: str
    body: bytes
    content_type: str = ""
    # Bidi routes only: more parts of this turn follow (CompletionState PARTIAL).
    partial: bool = False
    # Bidi routes only: how the model should read `body` (text and JSON are UTF8).
    data_type: BidiDataType = "BINARY"


@dataclass(frozen=True, slots=True)
class BadTurn:
    """A turn the transport could not decode; refused in-band with `error`."""

    turn_id: str
    error: SagewireError


@dataclass(frozen=True, slots=True)
class CancelTurn:
    turn_id: str


@dataclass(frozen=True, slots=True)
class CloseSession:
    """No more turns: in-flight ones finish, then the session ends (like a half-close)."""


ClientMessage = Turn | BadTurn | CancelTurn | CloseSession


# -- what comes out -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionOpened:
    model: str
    session_id: str = ""
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SessionChanged:
    """A turn opened the SageMaker session, or it was replaced after SageMaker rejected it."""

    session_id: str
    expires_at: datetime | None
    turn_id: str
    reopened: bool


@dataclass(frozen=True, slots=True)
class TurnChunk:
    turn_id: str
    body: bytes
    # A whole record or answer that may be JSON (lines framing, a JSON real-time answer, or a
    # UTF8 part of a bidirectional stream).
    record: bool
    # Bidi routes only: the model's DataType and CompletionState (partial = PARTIAL).
    data_type: BidiDataType | None = None
    partial: bool = False


@dataclass(frozen=True, slots=True)
class TurnEnded:
    turn_id: str
    invoked_variant: str
    chunk_count: int
    byte_count: int
    # The SageMaker endpoint that answered: the route's own or a fallback.
    endpoint: str = ""


@dataclass(frozen=True, slots=True)
class TurnFailed:
    turn_id: str
    error: SagewireError


ConverseEvent = SessionOpened | SessionChanged | TurnChunk | TurnEnded | TurnFailed
Send = Callable[[ConverseEvent], Awaitable[None]]
# Events waiting for the session to send them, each with whether it holds a chunk credit;
# None only wakes the sender.
type Outbox = asyncio.Queue[tuple[ConverseEvent | None, bool]]
