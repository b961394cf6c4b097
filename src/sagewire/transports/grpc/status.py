"""The one table from domain errors to gRPC statuses with rich details.

Every error leaving sagewire passes through `to_grpc_status`; docs/errors.md documents the
result. Details follow google.rpc conventions so any gRPC client can read them:
ErrorInfo (stable `reason`, domain "sagewire"), BadRequest (the offending field), QuotaFailure
(the exceeded per-caller quota), RetryInfo
(when a retry may help) and sagewire.v1.ModelErrorDetail (the model's own status/message).
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from sagewire.core.error_text import bounded
from sagewire.core.errors import ErrorKind, SagewireError
from sagewire.v1 import common_pb2

ERROR_DOMAIN = "sagewire"

GRPC_CODES: dict[ErrorKind, grpc.StatusCode] = {
    ErrorKind.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorKind.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorKind.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    ErrorKind.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorKind.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorKind.CANCELLED: grpc.StatusCode.CANCELLED,
    ErrorKind.UNIMPLEMENTED: grpc.StatusCode.UNIMPLEMENTED,
    ErrorKind.INTERNAL: grpc.StatusCode.INTERNAL,
    ErrorKind.ABORTED: grpc.StatusCode.ABORTED,
    ErrorKind.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
}


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def to_rpc_status(error: SagewireError) -> status_pb2.Status:
    """The google.rpc.Status for a domain error (also used in-band by Converse), its text
    bounded so that the trailers stay far below gRPC's 8 KiB default (core.error_text)."""
    error = bounded(error)
    code = GRPC_CODES[error.kind]
    details = [
        _pack(
            error_details_pb2.ErrorInfo(
                reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata
            )
        )
    ]
    if error.violations:
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description
                        )
                        for v in error.violations
                    ]
                )
            )
        )
    if error.quota_violations:
        details.append(
            _pack(
                error_details_pb2.QuotaFailure(
                    violations=[
                        error_details_pb2.QuotaFailure.Violation(
                            subject=v.subject, description=v.description
                        )
                        for v in error.quota_violations
                    ]
                )
            )
        )
    if error.retry_after_s is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(error.retry_after_s * 1e9))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    if error.model_failure is not None:
        failure = error.model_failure
        details.append(
            _pack(
                common_pb2.ModelErrorDetail(
                    original_status_code=failure.original_status_code,
                    original_message=failure.original_message,
                    log_stream_arn=failure.log_stream_arn,
                )
            )
        )
    return status_pb2.Status(code=code.value[0], message=error.message, details=details)


# gRPC's retry pushback (gRFC A6): a client retry policy waits this long instead of its own
# randomised backoff, so the RetryInfo delay sagewire asks for is what gRPC clients wait.
PUSHBACK_KEY = "grpc-retry-pushback-ms"


# A negative pushback tells a gRPC client's retry policy not to retry at all (gRFC A6).
NO_RETRY_PUSHBACK = "-1"


def pushback_ms(error: SagewireError) -> str:
    """The `grpc-retry-pushback-ms` value: RetryInfo's delay in ms when a retry may help, else
    -1 (SagewireError.retry_after_s None: retrying the same request cannot succeed), so a
    client whose policy retries this code (UNAVAILABLE in the recommended config) does not."""
    if error.retry_after_s is None:
        return NO_RETRY_PUSHBACK
    # The same whole milliseconds as RetryInfo's delay reads (`to_grpc_status`: nanoseconds,
    # truncated to ms by Duration.ToMilliseconds), so the two never differ by one.
    return str(int(error.retry_after_s * 1e9) // 1_000_000)


def to_grpc_status(error: SagewireError) -> grpc.Status:
    """A grpc.Status (code, message, trailing metadata with the details) for `context.abort`,
    with the `grpc-retry-pushback-ms` trailer (`pushback_ms`)."""
    status = rpc_status.to_status(to_rpc_status(error))
    pushback = ((PUSHBACK_KEY, pushback_ms(error)),)
    return _Status(status.code, status.details, (*status.trailing_metadata, *pushback))


@dataclass(frozen=True)
class _Status(grpc.Status):
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]
