"""Domain errors: every failure a caller can see, named for what went wrong.

Each error carries a stable machine-readable `reason` (sent as google.rpc.ErrorInfo.reason)
and a `kind` that the transports map to a status code in exactly one table
(sagewire.transports.grpc.status). Messages say what to fix; they never include payloads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class ErrorKind(StrEnum):
    """Transport-neutral error classes; each maps to one gRPC code and one HTTP status."""

    INVALID_ARGUMENT = "invalid_argument"
    NOT_FOUND = "not_found"
    FAILED_PRECONDITION = "failed_precondition"
    PERMISSION_DENIED = "permission_denied"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    UNAVAILABLE = "unavailable"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    CANCELLED = "cancelled"
    UNIMPLEMENTED = "unimplemented"
    INTERNAL = "internal"
    ABORTED = "aborted"
    UNAUTHENTICATED = "unauthenticated"


# Reason of the error for a SageMaker stateful session id SageMaker no longer accepts; Converse
# reopens the session on it when the route says so.
SESSION_REJECTED = "SESSION_REJECTED"


@dataclass(frozen=True)
class FieldViolation:
    """One bad request field (google.rpc.BadRequest.FieldViolation)."""

    field: str
    description: str


@dataclass(frozen=True)
class QuotaViolation:
    """One exceeded quota (google.rpc.QuotaFailure.Violation): whose, and which limit."""

    subject: str
    description: str


@dataclass(frozen=True)
class ModelFailure:
    """What the model container itself answered (SageMaker ModelError)."""

    original_status_code: int
    original_message: str
    log_stream_arn: str = ""


@dataclass
class SagewireError(Exception):
    """Base of all errors a caller may see."""

    message: str
    kind: ErrorKind = ErrorKind.INTERNAL
    reason: str = "INTERNAL"
    # Seconds after which a retry may succeed; None means retrying will not help.
    retry_after_s: float | None = None
    violations: tuple[FieldViolation, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)
    model_failure: ModelFailure | None = None
    quota_violations: tuple[QuotaViolation, ...] = ()

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


def invalid_argument(
    field_name: str, message: str, reason: str = "INVALID_ARGUMENT"
) -> SagewireError:
    """A request field is wrong; the message names the field and the rule."""
    return SagewireError(
        message=f"{field_name}: {message}",
        kind=ErrorKind.INVALID_ARGUMENT,
        reason=reason,
        violations=(FieldViolation(field_name, message),),
    )


def model_not_found(model: str, known: list[str]) -> SagewireError:
    listed = ", ".join(sorted(known)[:20]) or "none configured"
    return SagewireError(
        message=f"unknown model {model!r}; known models: {listed}",
        kind=ErrorKind.NOT_FOUND,
        reason="UNKNOWN_MODEL",
        metadata={"model": model},
    )


def unimplemented(capability: str) -> SagewireError:
    return SagewireError(
        message=f"{capability} is not implemented yet in this sagewire version",
        kind=ErrorKind.UNIMPLEMENTED,
        reason="NOT_IMPLEMENTED",
    )


def deadline_exceeded(what: str, timeout_s: float) -> SagewireError:
    return SagewireError(
        message=f"{what} did not finish within {timeout_s:.3g}s",
        kind=ErrorKind.DEADLINE_EXCEEDED,
        reason="DEADLINE_EXCEEDED",
    )
