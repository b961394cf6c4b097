"""What each AWS failure means for a caller, and whether it may be sent again: the tables.

One row per AWS error code (SageMaker Runtime, S3), per model status, and per way a connection
can fail in each phase of a call. A row says:
- `kind`, `reason`: the domain error (its gRPC status: sagewire.transports.grpc.status);
- `retry_after_s`: the retry advice for the caller (RetryInfo); None = sending the same request
  again fails the same way, or may run the model again;
- `resend`: the failure **proves that AWS did not act on the request** (no model ran, no job was
  queued, nothing was stored), so the AWS client may send it again within its retry quota
  (sagewire.aws.retries). Nothing else is resent: inference is not idempotent, and a request that
  timed out or lost its connection may have run. ModelNotReadyException also proves nothing ran,
  but is KEEP: sagewire.core.cold_start sends it again within the caller's deadline, and a second
  layer of resends under it would multiply the attempts;
- `message`: a str.format template over `endpoint`/`bucket` (quoted with !r), `message`
  (AWS's text), `code` (the AWS error code) and `target` ("SageMaker Runtime for endpoint 'e'").

The aioboto3 adapters and any other client of the same APIs (a lean SigV4 InvokeEndpoint client)
use these rows through `runtime_row`, `s3_row`, `model_row` and `transport_row`, so they agree
on statuses, advice and resends. sagewire.aws.errors builds the errors from them.
"""

# One row per line reads as a table; rows are longer than the project's 100 columns.
# ruff: noqa: E501

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sagewire.core.errors import ErrorKind

_INVALID = ErrorKind.INVALID_ARGUMENT
_NOT_FOUND = ErrorKind.NOT_FOUND
_PRECONDITION = ErrorKind.FAILED_PRECONDITION
_DENIED = ErrorKind.PERMISSION_DENIED
_EXHAUSTED = ErrorKind.RESOURCE_EXHAUSTED
_UNAVAILABLE = ErrorKind.UNAVAILABLE
_DEADLINE = ErrorKind.DEADLINE_EXCEEDED
_INTERNAL = ErrorKind.INTERNAL
_ABORTED = ErrorKind.ABORTED
_UNAUTHENTICATED = ErrorKind.UNAUTHENTICATED
RESEND = True
KEEP = False


@dataclass(frozen=True)
class Row:
    kind: ErrorKind
    reason: str
    retry_after_s: float | None
    resend: bool
    message: str


# fmt: off
# SageMaker Runtime error codes (InvokeEndpoint, the response stream, async, and the HTTP/2 API's
# names after translation). ModelError, the stream errors and the stale-session ValidationError
# are decided in sagewire.aws.errors (they read more than the code).
_ACCESS = "sagewire's AWS identity may not call endpoint {endpoint!r} ({code}); check the IAM role of this deployment"
_THROTTLED = "SageMaker is throttling calls to endpoint {endpoint!r}; slow down and retry with backoff"
_RUNTIME: dict[str, Row] = {
    "ValidationError":             Row(_INVALID, "SAGEMAKER_VALIDATION", None, KEEP, "SageMaker rejected the request to endpoint {endpoint!r}: {message}"),
    "ValidationException":         Row(_INVALID, "SAGEMAKER_VALIDATION", None, KEEP, "SageMaker rejected the request to endpoint {endpoint!r}: {message}"),
    "ModelNotReadyException":      Row(_UNAVAILABLE, "MODEL_NOT_READY", 5.0, KEEP, "model behind endpoint {endpoint!r} is not ready yet (loading or scaling from zero); retry shortly: {message}"),
    "ThrottlingException":         Row(_EXHAUSTED, "THROTTLED", 1.0, RESEND, _THROTTLED),
    "Throttling":                  Row(_EXHAUSTED, "THROTTLED", 1.0, RESEND, _THROTTLED),
    "TooManyRequestsException":    Row(_EXHAUSTED, "THROTTLED", 1.0, RESEND, _THROTTLED),
    "ServiceUnavailable":          Row(_UNAVAILABLE, "SAGEMAKER_UNAVAILABLE", 1.0, RESEND, "SageMaker Runtime is unavailable for endpoint {endpoint!r}: {message}"),
    "ServiceUnavailableException": Row(_UNAVAILABLE, "SAGEMAKER_UNAVAILABLE", 1.0, RESEND, "SageMaker Runtime is unavailable for endpoint {endpoint!r}: {message}"),
    "InternalDependencyException": Row(_UNAVAILABLE, "SAGEMAKER_DEPENDENCY_FAILURE", 1.0, KEEP, "a SageMaker dependency failed for endpoint {endpoint!r}: {message}"),
    "InternalFailure":             Row(_INTERNAL, "SAGEMAKER_INTERNAL_FAILURE", None, KEEP, "SageMaker Runtime failed internally for endpoint {endpoint!r}: {message}"),
    "InternalServerError":         Row(_INTERNAL, "SAGEMAKER_INTERNAL_FAILURE", None, KEEP, "SageMaker Runtime failed internally for endpoint {endpoint!r}: {message}"),
    "InternalFailureException":    Row(_INTERNAL, "SAGEMAKER_INTERNAL_FAILURE", None, KEEP, "SageMaker Runtime failed internally for endpoint {endpoint!r}: {message}"),
    "AccessDeniedException":       Row(_DENIED, "AWS_ACCESS_DENIED", None, KEEP, _ACCESS),
    "AccessDenied":                Row(_DENIED, "AWS_ACCESS_DENIED", None, KEEP, _ACCESS),
    "UnrecognizedClientException": Row(_DENIED, "AWS_ACCESS_DENIED", None, KEEP, _ACCESS),
    "InvalidSignatureException":   Row(_DENIED, "AWS_ACCESS_DENIED", None, KEEP, _ACCESS),
    "ExpiredTokenException":       Row(_DENIED, "AWS_ACCESS_DENIED", None, KEEP, _ACCESS),
}
_RUNTIME_OTHER = Row(_INTERNAL, "SAGEMAKER_ERROR", None, KEEP, "SageMaker returned {code} for endpoint {endpoint!r}: {message}")
# Special rows of the ValidationError code, chosen by its message (sagewire.aws.errors).
ENDPOINT_NOT_FOUND = Row(_NOT_FOUND, "ENDPOINT_NOT_FOUND", None, KEEP, "SageMaker endpoint {endpoint!r} does not exist in this account and region")

# S3 error codes (async staging, result probes and reads). S3 calls are idempotent, but a
# resend still costs the caller's time: only answers that say S3 did nothing are resent.
_S3_DENIED = "sagewire's AWS identity may not use S3 bucket {bucket!r} ({code}); check the IAM role of this deployment"
_S3_BUSY = "S3 is unavailable for bucket {bucket!r} ({code}); retry with backoff"
_S3_GONE = "the S3 object in bucket {bucket!r} no longer exists (a lifecycle rule may have removed it)"
_S3: dict[str, Row] = {
    "NoSuchBucket":          Row(_PRECONDITION, "S3_BUCKET_NOT_FOUND", None, KEEP, "S3 bucket {bucket!r} does not exist; the operator must create it or fix the async staging configuration"),
    "NoSuchKey":             Row(_NOT_FOUND, "S3_OBJECT_NOT_FOUND", None, KEEP, _S3_GONE),
    "404":                   Row(_NOT_FOUND, "S3_OBJECT_NOT_FOUND", None, KEEP, _S3_GONE),
    "NotFound":              Row(_NOT_FOUND, "S3_OBJECT_NOT_FOUND", None, KEEP, _S3_GONE),
    "AccessDenied":          Row(_DENIED, "AWS_ACCESS_DENIED", None, KEEP, _S3_DENIED),
    "403":                   Row(_DENIED, "AWS_ACCESS_DENIED", None, KEEP, _S3_DENIED),
    "InvalidAccessKeyId":    Row(_DENIED, "AWS_ACCESS_DENIED", None, KEEP, _S3_DENIED),
    "SignatureDoesNotMatch": Row(_DENIED, "AWS_ACCESS_DENIED", None, KEEP, _S3_DENIED),
    "ExpiredToken":          Row(_DENIED, "AWS_ACCESS_DENIED", None, KEEP, _S3_DENIED),
    "AllAccessDisabled":     Row(_DENIED, "AWS_ACCESS_DENIED", None, KEEP, _S3_DENIED),
    "SlowDown":              Row(_UNAVAILABLE, "S3_UNAVAILABLE", 1.0, RESEND, _S3_BUSY),
    "ServiceUnavailable":    Row(_UNAVAILABLE, "S3_UNAVAILABLE", 1.0, RESEND, _S3_BUSY),
    "503":                   Row(_UNAVAILABLE, "S3_UNAVAILABLE", 1.0, RESEND, _S3_BUSY),
    "RequestTimeout":        Row(_UNAVAILABLE, "S3_UNAVAILABLE", 1.0, RESEND, _S3_BUSY),
    "InternalError":         Row(_UNAVAILABLE, "S3_UNAVAILABLE", 1.0, RESEND, _S3_BUSY),
    "500":                   Row(_UNAVAILABLE, "S3_UNAVAILABLE", 1.0, RESEND, _S3_BUSY),
}
_S3_OTHER = Row(_INTERNAL, "S3_ERROR", None, KEEP, "S3 returned {code} for bucket {bucket!r}")

# The HTTP status a model container answered with (SageMaker ModelError's OriginalStatusCode).
# A model error is never resent: the model ran.
_MODEL_FAILED = "model behind endpoint {endpoint!r} failed with status {status}: {message}"
_MODEL: dict[int, Row] = {
    400: Row(_INVALID, "MODEL_ERROR", None, KEEP, _MODEL_FAILED),
    401: Row(_UNAUTHENTICATED, "MODEL_ERROR", None, KEEP, _MODEL_FAILED),
    403: Row(_DENIED, "MODEL_ERROR", None, KEEP, _MODEL_FAILED),
    404: Row(_NOT_FOUND, "MODEL_ERROR", None, KEEP, _MODEL_FAILED),
    408: Row(_DEADLINE, "MODEL_ERROR", None, KEEP, _MODEL_FAILED),
    409: Row(_ABORTED, "MODEL_ERROR", None, KEEP, _MODEL_FAILED),
    413: Row(_INVALID, "MODEL_ERROR", None, KEEP, _MODEL_FAILED),
    415: Row(_INVALID, "MODEL_ERROR", None, KEEP, _MODEL_FAILED),
    422: Row(_INVALID, "MODEL_ERROR", None, KEEP, _MODEL_FAILED),
    429: Row(_EXHAUSTED, "MODEL_ERROR", 1.0, KEEP, _MODEL_FAILED),
    502: Row(_UNAVAILABLE, "MODEL_ERROR", 1.0, KEEP, _MODEL_FAILED),
    503: Row(_UNAVAILABLE, "MODEL_ERROR", 1.0, KEEP, _MODEL_FAILED),
    504: Row(_DEADLINE, "MODEL_ERROR", None, KEEP, _MODEL_FAILED),
}
_MODEL_OTHER_4XX = Row(_PRECONDITION, "MODEL_ERROR", None, KEEP, _MODEL_FAILED)
_MODEL_OTHER = Row(_INTERNAL, "MODEL_ERROR", None, KEEP, _MODEL_FAILED)
# fmt: on


class Phase(StrEnum):
    """How far a call got when its connection failed."""

    SENDING = "sending"  # the request was being sent, or sent, and no answer had begun
    RECEIVING = "receiving"  # the answer (status and headers) had begun: body or stream under way


class Cut(StrEnum):
    """How a connection failed."""

    UNREACHABLE = "unreachable"  # never connected: refused, DNS, connect timeout, TLS
    TIMED_OUT = "timed_out"  # connected, then nothing arrived for the read timeout
    LOST = "lost"  # connected, then closed or reset


class Service(StrEnum):
    RUNTIME = "runtime"
    S3 = "s3"


# fmt: off
# Connection failures by service, how and when. Only a connection never made proves the request
# did not run; a read timeout is a timeout in every phase (never "unreachable", never resent).
_TIMED_OUT_MESSAGE = "{target} sent nothing for the read timeout (aws.read_timeout_s) {when}"
_TRANSPORT: dict[tuple[Service, Cut], Row] = {
    (Service.RUNTIME, Cut.UNREACHABLE): Row(_UNAVAILABLE, "RUNTIME_UNREACHABLE", 1.0, RESEND, "could not reach {target}: {code}"),
    (Service.RUNTIME, Cut.TIMED_OUT):   Row(_DEADLINE, "UPSTREAM_READ_TIMEOUT", None, KEEP, _TIMED_OUT_MESSAGE),
    (Service.RUNTIME, Cut.LOST):        Row(_UNAVAILABLE, "UPSTREAM_CONNECTION_LOST", 1.0, KEEP, "the connection to {target} broke {when}; the model may have run: {code}"),
    (Service.S3, Cut.UNREACHABLE):      Row(_UNAVAILABLE, "S3_UNREACHABLE", 1.0, RESEND, "could not reach {target}: {code}"),
    (Service.S3, Cut.TIMED_OUT):        Row(_DEADLINE, "UPSTREAM_READ_TIMEOUT", None, KEEP, _TIMED_OUT_MESSAGE),
    (Service.S3, Cut.LOST):             Row(_UNAVAILABLE, "S3_UNREACHABLE", 1.0, KEEP, "the connection to {target} broke {when}: {code}"),
}
_WHEN = {Phase.SENDING: "before answering", Phase.RECEIVING: "in the middle of its answer"}
# fmt: on


def runtime_row(code: str) -> Row:
    """The row of a SageMaker Runtime error code (not ModelError or the stream errors)."""
    return _RUNTIME.get(code, _RUNTIME_OTHER)


def s3_row(code: str) -> Row:
    return _S3.get(code, _S3_OTHER)


def model_row(status: int) -> Row:
    """The row of a model container's HTTP status (SageMaker ModelError)."""
    row = _MODEL.get(status)
    if row is None:
        return _MODEL_OTHER_4XX if 400 <= status < 500 else _MODEL_OTHER
    return row


def transport_row(service: Service, cut: Cut) -> Row:
    return _TRANSPORT[service, cut]


def phase_words(phase: Phase) -> str:
    """How a transport row's message says when the connection failed ({when})."""
    return _WHEN[phase]


def resendable(service: Service, code: str) -> bool:
    """Whether an AWS answer with this error code proves the request was not acted on."""
    row = _RUNTIME.get(code) if service is Service.RUNTIME else _S3.get(code)
    return row is not None and row.resend
