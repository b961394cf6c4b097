"""botocore/aiohttp failures → domain errors. The only place that knows AWS error codes.

The gRPC status each domain error gets is decided later, at the edge
(sagewire.transports.grpc.status); docs/errors.md shows the combined table.
"""

from __future__ import annotations

import aiohttp
from botocore import exceptions as bx

from sagewire.core.async_types import S3Location
from sagewire.core.errors import SESSION_REJECTED, ErrorKind, ModelFailure, SagewireError

# The model's text travels in gRPC trailers, which peers cap at 8 KiB by default: keep the
# detail copy to 2 KiB and quote only a short excerpt in the status message.
_MAX_MODEL_DETAIL_BYTES = 2048
_MAX_MODEL_EXCERPT_BYTES = 200


def _clip_utf8(text: str, limit: int) -> str:
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[:limit].decode(errors="ignore") + "…"


def _model_kind(status: int) -> ErrorKind:
    """The gRPC-level meaning of the HTTP status a model container answered with."""
    if status in (400, 413, 415, 422):
        return ErrorKind.INVALID_ARGUMENT
    if status == 401:
        return ErrorKind.UNAUTHENTICATED
    if status == 403:
        return ErrorKind.PERMISSION_DENIED
    if status == 404:
        return ErrorKind.NOT_FOUND
    if status in (408, 504):
        return ErrorKind.DEADLINE_EXCEEDED
    if status == 409:
        return ErrorKind.ABORTED
    if status == 429:
        return ErrorKind.RESOURCE_EXHAUSTED
    if status in (502, 503):
        return ErrorKind.UNAVAILABLE
    if 400 <= status < 500:
        return ErrorKind.FAILED_PRECONDITION
    return ErrorKind.INTERNAL


def _model_error(endpoint: str, response: dict[str, object], message: str) -> SagewireError:
    status = int(str(response.get("OriginalStatusCode") or 0))
    original = _clip_utf8(str(response.get("OriginalMessage") or ""), _MAX_MODEL_DETAIL_BYTES)
    failure = ModelFailure(status, original, str(response.get("LogStreamArn") or ""))
    # SageMaker reports a container that missed its 60 s window as original status 0.
    if status == 0 and "timed out" in (original + message).lower():
        return SagewireError(
            message=f"model behind endpoint {endpoint!r} did not answer in time: {message}",
            kind=ErrorKind.DEADLINE_EXCEEDED,
            reason="MODEL_TIMEOUT",
            model_failure=failure,
        )
    return SagewireError(
        message=f"model behind endpoint {endpoint!r} failed with status {status}: "
        f"{_clip_utf8(original or message, _MAX_MODEL_EXCERPT_BYTES)}",
        kind=_model_kind(status),
        reason="MODEL_ERROR",
        model_failure=failure,
        retry_after_s=1.0 if status in (429, 502, 503) else None,
        metadata={"original_status_code": str(status)},
    )


def _stream_error(
    code: str, endpoint: str, response: dict[str, object], message: str
) -> SagewireError:
    """Failures reported inside an event stream, after some parts may have been relayed."""
    stream_code = str(response.get("ErrorCode") or "")
    meta = {"aws_error_code": code, "endpoint": endpoint}
    if stream_code:
        meta["stream_error_code"] = stream_code
    if code == "InternalStreamFailure":
        return SagewireError(
            message=f"SageMaker's response stream from endpoint {endpoint!r} failed: {message}",
            kind=ErrorKind.UNAVAILABLE,
            reason="SAGEMAKER_STREAM_FAILURE",
            retry_after_s=1.0,
            metadata=meta,
        )
    if stream_code == "ModelInvocationTimeExceeded":
        return SagewireError(
            message=f"model behind endpoint {endpoint!r} exceeded its streaming time: {message}",
            kind=ErrorKind.DEADLINE_EXCEEDED,
            reason="MODEL_STREAM_TIMEOUT",
            metadata=meta,
        )
    if stream_code == "StreamBroken":
        return SagewireError(
            message=f"the model's stream from endpoint {endpoint!r} broke: {message}",
            kind=ErrorKind.UNAVAILABLE,
            reason="MODEL_STREAM_BROKEN",
            retry_after_s=1.0,
            metadata=meta,
        )
    return SagewireError(
        message=f"model behind endpoint {endpoint!r} failed mid-stream: {message}",
        kind=ErrorKind.INTERNAL,
        reason="MODEL_STREAM_ERROR",
        metadata=meta,
    )


def _endpoint_missing(message: str) -> bool:
    lowered = message.lower()
    return "not found" in lowered and "variant" not in lowered


def _client_error(exc: bx.ClientError, endpoint: str) -> SagewireError:
    response: dict[str, object] = dict(exc.response)
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    message = str(error.get("Message", "")) or code
    meta = {"aws_error_code": code, "endpoint": endpoint}
    if code == "ModelError":
        return _model_error(endpoint, response, message)
    if code in ("ModelStreamError", "InternalStreamFailure"):
        return _stream_error(code, endpoint, response, message)
    # SageMaker's wording for a stale session id is unconfirmed: any ValidationError that names
    # the session id. Checked first, as such a message may also say "not found".
    if code == "ValidationError" and "session" in message.lower():
        return SagewireError(
            message=f"SageMaker no longer accepts the stateful session on endpoint {endpoint!r} "
            f"(expired, closed or unknown); open a new session: {message}",
            kind=ErrorKind.ABORTED,
            reason=SESSION_REJECTED,
            metadata=meta,
        )
    # "Endpoint X of account N not found."; not "Target variant V not found for endpoint X".
    if code == "ValidationError" and _endpoint_missing(message):
        return SagewireError(
            message=f"SageMaker endpoint {endpoint!r} does not exist in this account and region",
            kind=ErrorKind.NOT_FOUND,
            reason="ENDPOINT_NOT_FOUND",
            metadata=meta,
        )
    if code in ("ValidationError", "ValidationException"):
        return SagewireError(
            message=f"SageMaker rejected the request to endpoint {endpoint!r}: {message}",
            kind=ErrorKind.INVALID_ARGUMENT,
            reason="SAGEMAKER_VALIDATION",
            metadata=meta,
        )
    if code == "ModelNotReadyException":
        return SagewireError(
            message=f"model behind endpoint {endpoint!r} is not ready yet (loading or scaling "
            f"from zero); retry shortly: {message}",
            kind=ErrorKind.UNAVAILABLE,
            reason="MODEL_NOT_READY",
            retry_after_s=5.0,
            metadata=meta,
        )
    if code in ("ThrottlingException", "Throttling", "TooManyRequestsException"):
        return SagewireError(
            message=f"SageMaker is throttling calls to endpoint {endpoint!r}; slow down and "
            "retry with backoff",
            kind=ErrorKind.RESOURCE_EXHAUSTED,
            reason="THROTTLED",
            retry_after_s=1.0,
            metadata=meta,
        )
    if code in ("ServiceUnavailable", "ServiceUnavailableException"):
        return SagewireError(
            message=f"SageMaker Runtime is unavailable for endpoint {endpoint!r}: {message}",
            kind=ErrorKind.UNAVAILABLE,
            reason="SAGEMAKER_UNAVAILABLE",
            retry_after_s=1.0,
            metadata=meta,
        )
    if code == "InternalDependencyException":
        return SagewireError(
            message=f"a SageMaker dependency failed for endpoint {endpoint!r}: {message}",
            kind=ErrorKind.UNAVAILABLE,
            reason="SAGEMAKER_DEPENDENCY_FAILURE",
            retry_after_s=1.0,
            metadata=meta,
        )
    if code in ("InternalFailure", "InternalServerError", "InternalFailureException"):
        return SagewireError(
            message=f"SageMaker Runtime failed internally for endpoint {endpoint!r}: {message}",
            kind=ErrorKind.INTERNAL,
            reason="SAGEMAKER_INTERNAL_FAILURE",
            metadata=meta,
        )
    if code in (
        "AccessDeniedException",
        "AccessDenied",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "ExpiredTokenException",
    ):
        return SagewireError(
            message=f"sagewire's AWS identity may not call endpoint {endpoint!r} ({code}); "
            "check the IAM role of this deployment",
            kind=ErrorKind.PERMISSION_DENIED,
            reason="AWS_ACCESS_DENIED",
            metadata=meta,
        )
    return SagewireError(
        message=f"SageMaker returned {code or 'an error'} for endpoint {endpoint!r}: {message}",
        kind=ErrorKind.INTERNAL,
        reason="SAGEMAKER_ERROR",
        metadata=meta,
    )


# What an AWS call can fail with. Anything else is a bug in sagewire and is left to the edge,
# which logs it with a traceback and an incident id.
AWS_FAILURES: tuple[type[BaseException], ...] = (
    bx.BotoCoreError,
    bx.ClientError,
    aiohttp.ClientError,
    ConnectionError,
)


# -- HTTP/2 bidirectional streams (aws-sdk-sagemaker-runtime-http2) ---------------------------

# The HTTP/2 API's Smithy model names some errors differently from the HTTP/1.1 one.
_HTTP2_ERROR_CODES = {
    "InputValidationError": "ValidationError",
    "ServiceUnavailableError": "ServiceUnavailable",
    "InternalServerError": "InternalFailure",
}
_TLS_ERROR_PREFIXES = ("AWS_IO_TLS_", "S2N_", "AWS_ERROR_PKI_")


def map_bidi_error(
    code: str, message: str, fields: dict[str, object], endpoint: str
) -> SagewireError:
    """An error the HTTP/2 SDK raised for a bidirectional stream, by its modelled name
    (ModelStreamError, InternalStreamFailure, ModelError, InputValidationError, ...) and extra
    fields (ErrorCode, OriginalStatusCode, OriginalMessage, LogStreamArn). Same table as the
    HTTP/1.1 operations."""
    response: dict[str, object] = {
        "Error": {"Code": _HTTP2_ERROR_CODES.get(code, code), "Message": message},
        **fields,
    }
    error = bx.ClientError(response, "InvokeEndpointWithBidirectionalStream")
    return _client_error(error, endpoint)


def map_bidi_transport_error(crt_name: str, endpoint: str) -> SagewireError:
    """A connection-level failure of the HTTP/2 stream, by the CRT's error name (e.g.
    AWS_IO_TLS_ERROR_NEGOTIATION_FAILURE, AWS_IO_SOCKET_CONNECTION_REFUSED), or a plain
    description when the SDK gave none."""
    if crt_name.startswith(_TLS_ERROR_PREFIXES):
        return SagewireError(
            message=f"TLS with SageMaker's HTTP/2 endpoint failed for endpoint {endpoint!r} "
            f"({crt_name}); check aws.bidi_endpoint_url and aws.ca_bundle",
            kind=ErrorKind.UNAVAILABLE,
            reason="UPSTREAM_TLS_FAILURE",
            metadata={"endpoint": endpoint, "transport_error": crt_name},
        )
    return SagewireError(
        message=f"could not reach SageMaker's HTTP/2 endpoint for endpoint {endpoint!r}: "
        f"{crt_name}",
        kind=ErrorKind.UNAVAILABLE,
        reason="RUNTIME_UNREACHABLE",
        retry_after_s=1.0,
        metadata={"endpoint": endpoint, "transport_error": crt_name},
    )


def bidi_connection_lost(endpoint: str) -> SagewireError:
    """The HTTP/2 stream broke after it had started (reset, connection dropped)."""
    return SagewireError(
        message=f"the bidirectional stream to endpoint {endpoint!r} broke mid-way; the model's "
        "state for this stream is gone: open a new stream",
        kind=ErrorKind.UNAVAILABLE,
        reason="UPSTREAM_CONNECTION_LOST",
        retry_after_s=1.0,
        metadata={"endpoint": endpoint},
    )


def bidi_input_stalled(endpoint: str, timeout_s: float) -> SagewireError:
    """SageMaker took no input for `timeout_s` while sagewire's send buffer was full."""
    return SagewireError(
        message=f"the model behind endpoint {endpoint!r} accepted no input for "
        f"{timeout_s:.3g}s; send more slowly or wait for its answers",
        kind=ErrorKind.RESOURCE_EXHAUSTED,
        reason="UPSTREAM_INPUT_STALLED",
        retry_after_s=1.0,
        metadata={"endpoint": endpoint},
    )


def bidi_read_timeout(endpoint: str, timeout_s: float) -> SagewireError:
    """Nothing arrived from SageMaker on a bidirectional stream within the read timeout."""
    return SagewireError(
        message=f"SageMaker sent nothing on the bidirectional stream to endpoint {endpoint!r} "
        f"for {timeout_s:.3g}s (aws.read_timeout_s)",
        kind=ErrorKind.DEADLINE_EXCEEDED,
        reason="UPSTREAM_READ_TIMEOUT",
        metadata={"endpoint": endpoint},
    )


def map_aws_error(exc: BaseException, endpoint: str) -> SagewireError:
    """Translate any failure of an AWS call into the domain error a caller should see."""
    if isinstance(exc, SagewireError):
        return exc
    if isinstance(exc, bx.ClientError):
        return _client_error(exc, endpoint)
    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
        return SagewireError(
            message="sagewire has no usable AWS credentials; configure the standard AWS "
            "credential chain (environment, profile, or instance/task role)",
            kind=ErrorKind.INTERNAL,
            reason="AWS_CREDENTIALS_MISSING",
        )
    if isinstance(exc, bx.ReadTimeoutError):
        return SagewireError(
            message=f"SageMaker did not answer for endpoint {endpoint!r} within the read timeout",
            kind=ErrorKind.DEADLINE_EXCEEDED,
            reason="UPSTREAM_READ_TIMEOUT",
        )
    if isinstance(
        exc,
        bx.EndpointConnectionError
        | bx.ConnectionClosedError
        | bx.ConnectTimeoutError
        | aiohttp.ClientError
        | ConnectionError,
    ):
        return SagewireError(
            message=f"could not reach SageMaker Runtime for endpoint {endpoint!r}: "
            f"{type(exc).__name__}",
            kind=ErrorKind.UNAVAILABLE,
            reason="RUNTIME_UNREACHABLE",
            retry_after_s=1.0,
        )
    if isinstance(exc, bx.BotoCoreError):
        return SagewireError(
            message=f"AWS client error for endpoint {endpoint!r}: {type(exc).__name__}",
            kind=ErrorKind.INTERNAL,
            reason="AWS_CLIENT_ERROR",
        )
    return SagewireError(message="internal error", kind=ErrorKind.INTERNAL, reason="INTERNAL")


# -- S3 (async inference staging and results) -------------------------------------------------

_S3_UNAVAILABLE = frozenset(
    {"SlowDown", "ServiceUnavailable", "503", "InternalError", "500", "RequestTimeout"}
)
_S3_DENIED = frozenset(
    {
        "AccessDenied",
        "403",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "AllAccessDisabled",
    }
)


def map_s3_error(exc: BaseException, location: S3Location) -> SagewireError:
    """Translate a failed S3 call on `location` (an s3:// object) into a domain error.

    Messages name the bucket only: S3 keys of staged inputs and results are sagewire's business.
    """
    if isinstance(exc, SagewireError):
        return exc
    bucket = location.bucket
    if isinstance(exc, bx.ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        meta = {"aws_error_code": code, "bucket": bucket}
        if code == "NoSuchBucket":
            return SagewireError(
                message=f"S3 bucket {bucket!r} does not exist; the operator must create it or "
                "fix the async staging configuration",
                kind=ErrorKind.FAILED_PRECONDITION,
                reason="S3_BUCKET_NOT_FOUND",
                metadata=meta,
            )
        if code in ("NoSuchKey", "404", "NotFound"):
            return SagewireError(
                message=f"the S3 object in bucket {bucket!r} no longer exists (a lifecycle rule "
                "may have removed it)",
                kind=ErrorKind.NOT_FOUND,
                reason="S3_OBJECT_NOT_FOUND",
                metadata=meta,
            )
        if code in _S3_DENIED:
            return SagewireError(
                message=f"sagewire's AWS identity may not use S3 bucket {bucket!r} ({code}); "
                "check the IAM role of this deployment",
                kind=ErrorKind.PERMISSION_DENIED,
                reason="AWS_ACCESS_DENIED",
                metadata=meta,
            )
        if code in _S3_UNAVAILABLE:
            return SagewireError(
                message=f"S3 is unavailable for bucket {bucket!r} ({code}); retry with backoff",
                kind=ErrorKind.UNAVAILABLE,
                reason="S3_UNAVAILABLE",
                retry_after_s=1.0,
                metadata=meta,
            )
        return SagewireError(
            message=f"S3 returned {code or 'an error'} for bucket {bucket!r}",
            kind=ErrorKind.INTERNAL,
            reason="S3_ERROR",
            metadata=meta,
        )
    if isinstance(exc, bx.ReadTimeoutError):
        return SagewireError(
            message=f"S3 did not answer for bucket {bucket!r} within the read timeout",
            kind=ErrorKind.UNAVAILABLE,
            reason="S3_UNAVAILABLE",
            retry_after_s=1.0,
        )
    if isinstance(
        exc,
        bx.EndpointConnectionError
        | bx.ConnectionClosedError
        | bx.ConnectTimeoutError
        | bx.ResponseStreamingError
        | aiohttp.ClientError
        | ConnectionError,
    ):
        return SagewireError(
            message=f"could not reach S3 for bucket {bucket!r}: {type(exc).__name__}",
            kind=ErrorKind.UNAVAILABLE,
            reason="S3_UNREACHABLE",
            retry_after_s=1.0,
        )
    # Credentials and other client-side failures read the same as for SageMaker.
    return map_aws_error(exc, f"s3://{bucket}")
