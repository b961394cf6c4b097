"""botocore/aiohttp failures → domain errors. With sagewire.aws.error_table (the rows), the
only place that knows AWS error codes.

The gRPC status each domain error gets is decided later, at the edge
(sagewire.transports.grpc.status); docs/errors.md shows the combined table.
"""

from __future__ import annotations

from socket import gaierror

import aiohttp
from botocore import exceptions as bx

from sagewire.aws.error_table import (
    ENDPOINT_NOT_FOUND,
    Cut,
    Phase,
    Row,
    Service,
    model_row,
    phase_words,
    runtime_row,
    s3_row,
    transport_row,
)
from sagewire.aws.lean_http1 import ConnectFailed
from sagewire.core.async_types import S3Location
from sagewire.core.error_text import clip_utf8
from sagewire.core.errors import SESSION_REJECTED, ErrorKind, ModelFailure, SagewireError

# The status message quotes a short excerpt of the model's text; ModelErrorDetail keeps more
# (all text is bounded once, before it leaves: sagewire.core.error_text).
_MAX_MODEL_EXCERPT_BYTES = 200


def _error(row: Row, metadata: dict[str, str] | None = None, **words: object) -> SagewireError:
    return SagewireError(
        message=row.message.format(**words),
        kind=row.kind,
        reason=row.reason,
        retry_after_s=row.retry_after_s,
        metadata=metadata or {},
    )


def _model_error(endpoint: str, response: dict[str, object], message: str) -> SagewireError:
    status = int(str(response.get("OriginalStatusCode") or 0))
    original = str(response.get("OriginalMessage") or "")
    failure = ModelFailure(status, original, str(response.get("LogStreamArn") or ""))
    # SageMaker reports a container that missed its 60 s window as original status 0.
    if status == 0 and "timed out" in (original + message).lower():
        return SagewireError(
            message=f"model behind endpoint {endpoint!r} did not answer in time: {message}",
            kind=ErrorKind.DEADLINE_EXCEEDED,
            reason="MODEL_TIMEOUT",
            model_failure=failure,
        )
    excerpt = clip_utf8(original or message, _MAX_MODEL_EXCERPT_BYTES)
    error = _error(
        model_row(status),
        {"original_status_code": str(status)},
        endpoint=endpoint,
        status=status,
        message=excerpt,
    )
    error.model_failure = failure
    return error


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
    row = runtime_row(code)
    if code == "ValidationError" and _endpoint_missing(message):
        row = ENDPOINT_NOT_FOUND
    return _error(row, meta, endpoint=endpoint, message=message, code=code or "an error")


def _cut(exc: BaseException) -> Cut | None:
    """How the connection failed, from botocore's or aiohttp's exception (None: not a
    connection failure)."""
    if isinstance(exc, bx.ConnectTimeoutError | bx.ProxyConnectionError | bx.SSLError):
        return Cut.UNREACHABLE
    if isinstance(exc, bx.ReadTimeoutError | aiohttp.ServerTimeoutError):
        return Cut.TIMED_OUT
    if isinstance(exc, bx.EndpointConnectionError):
        # aiobotocore raises it for any aiohttp ClientConnectionError (a reset too); only a
        # connect that failed (refused, DNS, TLS) proves nothing was sent. botocore keeps the
        # original exception in kwargs["error"] (the lean path's own: ConnectFailed).
        original = exc.kwargs.get("error")
        if original is None or isinstance(
            original, aiohttp.ClientConnectorError | gaierror | ConnectFailed
        ):
            return Cut.UNREACHABLE
        return Cut.LOST
    if isinstance(exc, aiohttp.ClientConnectorError | ConnectionRefusedError | gaierror):
        return Cut.UNREACHABLE
    if isinstance(
        exc,
        bx.ConnectionClosedError
        | bx.ResponseStreamingError
        | aiohttp.ClientError
        | ConnectionError,
    ):
        return Cut.LOST
    return None


def connection_cut(exc: BaseException) -> Cut | None:
    """Public for the retry policy (sagewire.aws.retries): how `exc` failed its connection."""
    return _cut(exc)


def _transport_error(
    service: Service, cut: Cut, phase: Phase, target: str, exc: BaseException
) -> SagewireError:
    row = transport_row(service, cut)
    return _error(row, target=target, when=phase_words(phase), code=type(exc).__name__)


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


def map_aws_error(exc: BaseException, endpoint: str, phase: Phase = Phase.SENDING) -> SagewireError:
    """Translate any failure of a SageMaker Runtime call into the domain error a caller should
    see. `phase`: RECEIVING once the response had begun (reading a body or a stream)."""
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
    cut = _cut(exc)
    if cut is not None:
        target = f"SageMaker Runtime for endpoint {endpoint!r}"
        return _transport_error(Service.RUNTIME, cut, phase, target, exc)
    if isinstance(exc, bx.BotoCoreError):
        return SagewireError(
            message=f"AWS client error for endpoint {endpoint!r}: {type(exc).__name__}",
            kind=ErrorKind.INTERNAL,
            reason="AWS_CLIENT_ERROR",
        )
    return SagewireError(message="internal error", kind=ErrorKind.INTERNAL, reason="INTERNAL")


# -- S3 (async inference staging and results) -------------------------------------------------


def map_s3_error(
    exc: BaseException, location: S3Location, phase: Phase = Phase.SENDING
) -> SagewireError:
    """Translate a failed S3 call on `location` (an s3:// object) into a domain error.

    Messages name the bucket only: S3 keys of staged inputs and results are sagewire's business.
    """
    if isinstance(exc, SagewireError):
        return exc
    bucket = location.bucket
    if isinstance(exc, bx.ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        meta = {"aws_error_code": code, "bucket": bucket}
        return _error(s3_row(code), meta, bucket=bucket, code=code or "an error")
    cut = _cut(exc)
    if cut is not None:
        return _transport_error(Service.S3, cut, phase, f"S3 for bucket {bucket!r}", exc)
    # Credentials and other client-side failures read the same as for SageMaker.
    return map_aws_error(exc, f"s3://{bucket}")
