"""The rules of a Converse apart from its session loop: which openings and turns are admitted
(`check_session_option`, `admission_error`), the errors a turn or session can end with, and how
a whole real-time answer becomes chunks (`result_chunks`). Pure functions of the session's
state; the protocol is in docs/converse.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from sagewire.config.converse import ConverseSettings
from sagewire.config.settings import StreamFraming
from sagewire.core.content import is_json
from sagewire.core.converse_bidi import BidiTurns
from sagewire.core.converse_events import Turn
from sagewire.core.errors import ErrorKind, SagewireError, invalid_argument
from sagewire.core.framing import frame_whole
from sagewire.core.types import InvokeResult
from sagewire.core.validation import NEW_SESSION


def check_session_option(model: str, settings: ConverseSettings, session_id: str) -> None:
    """Refuse an opening `options.session_id` the route's session settings contradict."""
    if settings.sessions and session_id:
        raise invalid_argument(
            "options.session_id",
            f"model {model!r} opens its own stateful session for each Converse; "
            "leave session_id empty",
        )
    if not settings.sessions and session_id == NEW_SESSION:
        raise invalid_argument(
            "options.session_id",
            f"model {model!r} has no Converse sessions (converse.sessions is off), so "
            f"{NEW_SESSION} cannot be used; pass an existing session id or none",
        )


def session_idle(model: str, idle_timeout_s: float, is_bidi: bool) -> SagewireError:
    quiet = "no part from the model" if is_bidi else "no turn running"
    return SagewireError(
        message=f"the Converse session on model {model!r} was idle for "
        f"{idle_timeout_s:g}s (no message, {quiet}) and was ended (converse.idle_timeout_s)",
        kind=ErrorKind.DEADLINE_EXCEEDED,
        reason="SESSION_IDLE_TIMEOUT",
    )


def session_too_long(model: str, max_duration_s: float) -> SagewireError:
    return SagewireError(
        message=f"the Converse session on model {model!r} reached its maximum "
        f"duration of {max_duration_s:g}s (converse.max_duration_s); open a new one",
        kind=ErrorKind.DEADLINE_EXCEEDED,
        reason="SESSION_MAX_DURATION",
    )


def turn_error(turn_id: str, message: str, kind: ErrorKind, reason: str) -> SagewireError:
    return SagewireError(message=message, kind=kind, reason=reason, metadata={"turn_id": turn_id})


def cancelled(turn_id: str) -> SagewireError:
    return turn_error(
        turn_id, f"turn {turn_id!r} was cancelled", ErrorKind.CANCELLED, "TURN_CANCELLED"
    )


def unknown_turn(turn_id: str) -> SagewireError:
    return turn_error(
        turn_id, f"cancel: no turn {turn_id!r} in this session", ErrorKind.NOT_FOUND, "UNKNOWN_TURN"
    )


def not_cancellable(model: str, turn_id: str) -> SagewireError:
    return turn_error(
        turn_id,
        f"turn {turn_id!r} cannot be cancelled: model {model!r} is a bidi route, "
        "whose parts reach the model as they arrive and whose stream has no per-turn "
        "cancel; cancel the call to stop the model",
        ErrorKind.FAILED_PRECONDITION,
        "TURN_NOT_CANCELLABLE",
    )


@dataclass(frozen=True, slots=True)
class Admission:
    """What of a session's state decides whether a new turn is admitted."""

    settings: ConverseSettings
    is_bidi: bool
    closing: bool
    bidi: BidiTurns | None  # the open stream, on bidi routes
    seen: set[str]  # turn ids used so far
    running: int
    waiting: int


def admission_error(turn: Turn, state: Admission) -> SagewireError | None:
    """Why `turn` is refused in-band, or None when it may run (or queue)."""
    settings = state.settings
    turn_id = turn.turn_id
    if not turn_id:
        return invalid_argument("turn_id", "is required: a client-chosen id for the turn")
    if turn.partial and not state.is_bidi:
        return invalid_argument("partial", "only turns on bidi routes may be partial")
    if state.closing:
        return turn_error(
            turn_id,
            "the session is closing (the client sent close); no more turns are accepted",
            ErrorKind.FAILED_PRECONDITION,
            "SESSION_CLOSING",
        )
    if state.bidi is not None and state.bidi.input_turn:
        if state.bidi.continues(turn_id):
            return None  # the next part of the same turn
        pending = state.bidi.input_turn
        return turn_error(
            turn_id,
            f"turn {turn_id!r} cannot start while turn {pending!r} is still sending parts "
            f"(its last part was partial); send {pending!r}'s last part without `partial` "
            "first",
            ErrorKind.FAILED_PRECONDITION,
            "TURN_INPUT_OPEN",
        )
    if turn_id in state.seen:
        return SagewireError(
            message=f"turn_id: {turn_id!r} was already used in this session; use a new id",
            kind=ErrorKind.INVALID_ARGUMENT,
            reason="DUPLICATE_TURN_ID",
            metadata={"turn_id": turn_id},
        )
    if len(state.seen) >= settings.max_turns:
        return turn_error(
            turn_id,
            f"the session already had {settings.max_turns} turns (converse.max_turns); "
            "open a new Converse",
            ErrorKind.RESOURCE_EXHAUSTED,
            "SESSION_TURN_LIMIT",
        )
    full = state.running >= settings.max_concurrent_turns
    if full and state.waiting >= settings.max_queued_turns:
        return SagewireError(
            message=f"{state.running} turns are running and {state.waiting} "
            "waiting, the most this session queues (converse.max_queued_turns); send the "
            "turn again once one finishes",
            kind=ErrorKind.RESOURCE_EXHAUSTED,
            reason="TURN_QUEUE_FULL",
            retry_after_s=0.2,
            metadata={"turn_id": turn_id},
        )
    return None


def result_chunks(result: InvokeResult, framing: StreamFraming) -> list[tuple[bytes, bool]]:
    """A whole answer as (body, is a record) chunks: records under lines or sse framing, else
    one chunk (a record when the answer is JSON); none for an empty answer."""
    if framing.records:
        return [(record, True) for record in frame_whole(result.body, framing)]
    return [(result.body, is_json(result.content_type))] if result.body else []
