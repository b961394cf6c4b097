"""botocore/aiohttp failures → domain errors (sagewire.aws.errors), one row at a time.

The exceptions are the real botocore/aiohttp classes, built the way botocore builds them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey
from botocore import exceptions as bx
from botocore.eventstream import EventStreamBuffer

from sagewire.aws import error_table
from sagewire.aws.error_table import Cut, Phase
from sagewire.aws.errors import connection_cut, map_aws_error
from sagewire.aws.runtime import _stream_exception
from sagewire.core.errors import ErrorKind, ModelFailure, SagewireError
from sagewire.emulator.eventstream import internal_stream_failure, model_stream_error

ENDPOINT = "my-endpoint"
LOG_STREAM = "arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/my-endpoint"


def client_error(
    code: str, message: str, operation: str = "InvokeEndpoint", **fields: Any
) -> bx.ClientError:
    return bx.ClientError({"Error": {"Code": code, "Message": message}, **fields}, operation)


def model_error(status: int, original: str = "model says no") -> bx.ClientError:
    return client_error(
        "ModelError",
        f'Received server error ({status}) from primary with message "{original}".',
        OriginalStatusCode=status,
        OriginalMessage=original,
        LogStreamArn=LOG_STREAM,
    )


def mapped(exc: BaseException) -> SagewireError:
    return map_aws_error(exc, ENDPOINT)


@pytest.mark.parametrize(
    ("status", "kind", "retry_after_s"),
    [
        (400, ErrorKind.INVALID_ARGUMENT, None),
        (401, ErrorKind.UNAUTHENTICATED, None),
        (403, ErrorKind.PERMISSION_DENIED, None),
        (404, ErrorKind.NOT_FOUND, None),
        (408, ErrorKind.DEADLINE_EXCEEDED, None),
        (409, ErrorKind.ABORTED, None),
        (413, ErrorKind.INVALID_ARGUMENT, None),
        (415, ErrorKind.INVALID_ARGUMENT, None),
        (418, ErrorKind.FAILED_PRECONDITION, None),
        (422, ErrorKind.INVALID_ARGUMENT, None),
        (424, ErrorKind.FAILED_PRECONDITION, None),
        (429, ErrorKind.RESOURCE_EXHAUSTED, 1.0),
        (500, ErrorKind.INTERNAL, None),
        (502, ErrorKind.UNAVAILABLE, 1.0),
        (503, ErrorKind.UNAVAILABLE, 1.0),
        (504, ErrorKind.DEADLINE_EXCEEDED, None),
    ],
)
def test_model_error_takes_the_meaning_of_the_models_status(
    status: int, kind: ErrorKind, retry_after_s: float | None
) -> None:
    error = mapped(model_error(status))
    assert error.kind is kind
    assert error.reason == "MODEL_ERROR"
    assert error.retry_after_s == retry_after_s
    assert error.model_failure == ModelFailure(status, "model says no", LOG_STREAM)
    assert error.metadata == {"original_status_code": str(status)}
    assert error.message == (
        f"model behind endpoint 'my-endpoint' failed with status {status}: model says no"
    )


def test_model_error_text_is_kept_whole_and_quoted_short() -> None:
    # The whole text stays in the domain error; core.error_text bounds it for the wire.
    error = mapped(model_error(500, "é" * 10_000))
    assert error.model_failure is not None
    assert error.model_failure.original_message == "é" * 10_000
    # 200 bytes of UTF-8 with the "…" (3 bytes), cut on a character boundary.
    assert error.message.endswith(": " + "é" * 98 + "…")


def test_model_error_without_original_message_uses_sagemakers_message() -> None:
    error = mapped(
        client_error("ModelError", "Received server error (500)", OriginalStatusCode=500)
    )
    assert error.message.endswith("failed with status 500: Received server error (500)")
    assert error.model_failure == ModelFailure(500, "", "")


def test_model_that_timed_out_is_model_timeout() -> None:
    message = (
        "Your invocation timed out while waiting for a response from container primary. "
        "Review the latency metrics for each container in Amazon CloudWatch"
    )
    error = mapped(client_error("ModelError", message, OriginalStatusCode=0))
    assert error.kind is ErrorKind.DEADLINE_EXCEEDED
    assert error.reason == "MODEL_TIMEOUT"
    assert error.retry_after_s is None
    assert error.model_failure == ModelFailure(0, "", "")
    assert "did not answer in time" in error.message


def test_original_status_zero_without_timeout_text_is_a_model_error() -> None:
    error = mapped(client_error("ModelError", "container crashed", OriginalStatusCode=0))
    assert (error.kind, error.reason) == (ErrorKind.INTERNAL, "MODEL_ERROR")


@pytest.mark.parametrize(
    ("code", "message", "kind", "reason", "retry_after_s"),
    [
        (
            "ValidationError",
            "Endpoint my-endpoint of account 123456789012 not found.",
            ErrorKind.NOT_FOUND,
            "ENDPOINT_NOT_FOUND",
            None,
        ),
        (
            "ValidationError",
            "Invalid session ID: session 4f2a of endpoint chat does not exist or was closed.",
            ErrorKind.ABORTED,
            "SESSION_REJECTED",
            None,
        ),
        (
            "ValidationError",
            "Session ID abc not found.",  # must not read as an unknown endpoint
            ErrorKind.ABORTED,
            "SESSION_REJECTED",
            None,
        ),
        (
            "ValidationError",
            "Inference Component Name header is required for endpoints to which you plan to "
            "deploy inference components.",
            ErrorKind.INVALID_ARGUMENT,
            "SAGEMAKER_VALIDATION",
            None,
        ),
        ("ModelNotReadyException", "loading", ErrorKind.UNAVAILABLE, "MODEL_NOT_READY", 5.0),
        ("ThrottlingException", "Rate exceeded", ErrorKind.RESOURCE_EXHAUSTED, "THROTTLED", 1.0),
        ("ServiceUnavailable", "busy", ErrorKind.UNAVAILABLE, "SAGEMAKER_UNAVAILABLE", 1.0),
        ("InternalFailure", "oops", ErrorKind.INTERNAL, "SAGEMAKER_INTERNAL_FAILURE", None),
        (
            "InternalDependencyException",
            "dep",
            ErrorKind.UNAVAILABLE,
            "SAGEMAKER_DEPENDENCY_FAILURE",
            1.0,
        ),
        ("AccessDeniedException", "no", ErrorKind.PERMISSION_DENIED, "AWS_ACCESS_DENIED", None),
        ("ExpiredTokenException", "old", ErrorKind.PERMISSION_DENIED, "AWS_ACCESS_DENIED", None),
        ("BrandNewException", "new", ErrorKind.INTERNAL, "SAGEMAKER_ERROR", None),
    ],
)
def test_client_error_codes(
    code: str, message: str, kind: ErrorKind, reason: str, retry_after_s: float | None
) -> None:
    error = mapped(client_error(code, message))
    assert (error.kind, error.reason, error.retry_after_s) == (kind, reason, retry_after_s)
    assert error.metadata == {"aws_error_code": code, "endpoint": ENDPOINT}
    assert ENDPOINT in error.message
    assert error.model_failure is None


def test_sagemaker_validation_message_is_relayed() -> None:
    error = mapped(client_error("ValidationError", "1 validation error detected: Value"))
    assert error.message == (
        "SageMaker rejected the request to endpoint 'my-endpoint': "
        "1 validation error detected: Value"
    )


def test_access_denied_names_the_aws_code() -> None:
    assert "(AccessDeniedException)" in mapped(client_error("AccessDeniedException", "")).message


@pytest.mark.parametrize(
    ("stream_code", "kind", "reason", "retry_after_s"),
    [
        ("ModelInvocationTimeExceeded", ErrorKind.DEADLINE_EXCEEDED, "MODEL_STREAM_TIMEOUT", None),
        ("StreamBroken", ErrorKind.UNAVAILABLE, "MODEL_STREAM_BROKEN", 1.0),
        ("SomethingElse", ErrorKind.INTERNAL, "MODEL_STREAM_ERROR", None),
        ("", ErrorKind.INTERNAL, "MODEL_STREAM_ERROR", None),
    ],
)
def test_model_stream_error_by_error_code(
    stream_code: str, kind: ErrorKind, reason: str, retry_after_s: float | None
) -> None:
    exc = client_error(
        "ModelStreamError",
        "stream failed",
        "InvokeEndpointWithResponseStream",
        ErrorCode=stream_code,
    )
    error = mapped(exc)
    assert (error.kind, error.reason, error.retry_after_s) == (kind, reason, retry_after_s)
    expected_meta = {"aws_error_code": "ModelStreamError", "endpoint": ENDPOINT}
    if stream_code:
        expected_meta["stream_error_code"] = stream_code
    assert error.metadata == expected_meta


def test_internal_stream_failure() -> None:
    error = mapped(
        client_error("InternalStreamFailure", "broken", "InvokeEndpointWithResponseStream")
    )
    assert (error.kind, error.reason, error.retry_after_s) == (
        ErrorKind.UNAVAILABLE,
        "SAGEMAKER_STREAM_FAILURE",
        1.0,
    )


def stream_exception(frame: bytes) -> bx.ClientError:
    """An exception event decoded the way the adapter decodes the response stream."""
    frames = EventStreamBuffer()
    frames.add_data(frame)
    [message] = list(frames)
    return _stream_exception(message)


@pytest.mark.parametrize(
    ("stream_code", "reason"),
    [
        ("ModelInvocationTimeExceeded", "MODEL_STREAM_TIMEOUT"),
        ("StreamBroken", "MODEL_STREAM_BROKEN"),
    ],
)
def test_stream_error_code_survives_the_adapters_decoding(stream_code: str, reason: str) -> None:
    error = mapped(stream_exception(model_stream_error("stream failed", stream_code)))
    assert error.reason == reason
    assert error.metadata["stream_error_code"] == stream_code
    assert "stream failed" in error.message


def test_internal_stream_failure_as_the_adapter_decodes_it() -> None:
    error = mapped(stream_exception(internal_stream_failure("broken")))
    assert error.reason == "SAGEMAKER_STREAM_FAILURE"


@pytest.mark.parametrize(
    "exc",
    [bx.NoCredentialsError(), bx.PartialCredentialsError(provider="env", cred_var="AWS_SECRET")],
)
def test_missing_credentials(exc: Exception) -> None:
    error = mapped(exc)
    assert (error.kind, error.reason, error.retry_after_s) == (
        ErrorKind.INTERNAL,
        "AWS_CREDENTIALS_MISSING",
        None,
    )
    assert "credential chain" in error.message


URL = "https://runtime.sagemaker.us-east-1.amazonaws.com"
REFUSED = aiohttp.ClientConnectorError(
    ConnectionKey("h", 443, True, True, None, None, None), ConnectionRefusedError(111, "refused")
)


@pytest.mark.parametrize(
    "exc",
    [
        bx.EndpointConnectionError(endpoint_url=URL),
        bx.EndpointConnectionError(endpoint_url=URL, error=REFUSED),
        bx.ConnectTimeoutError(endpoint_url=URL),
        REFUSED,
        ConnectionRefusedError(),
    ],
)
def test_a_connection_never_made_is_unreachable_and_resent(exc: Exception) -> None:
    error = mapped(exc)
    assert (error.kind, error.reason, error.retry_after_s) == (
        ErrorKind.UNAVAILABLE,
        "RUNTIME_UNREACHABLE",
        1.0,
    )
    assert error.message.endswith(f": {type(exc).__name__}")
    assert connection_cut(exc) is Cut.UNREACHABLE


@pytest.mark.parametrize(
    "exc",
    [
        bx.ConnectionClosedError(endpoint_url=URL),
        # aiobotocore raises EndpointConnectionError for a reset too: the original decides.
        bx.EndpointConnectionError(endpoint_url=URL, error=aiohttp.ClientOSError(104, "reset")),
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientPayloadError("cut"),
        ConnectionResetError(),
    ],
)
@pytest.mark.parametrize(
    ("phase", "when"),
    [(Phase.SENDING, "before answering"), (Phase.RECEIVING, "in the middle of its answer")],
)
def test_a_connection_lost_may_have_run_the_model(exc: Exception, phase: Phase, when: str) -> None:
    error = map_aws_error(exc, ENDPOINT, phase)
    assert (error.kind, error.reason, error.retry_after_s) == (
        ErrorKind.UNAVAILABLE,
        "UPSTREAM_CONNECTION_LOST",
        1.0,
    )
    assert f"broke {when}; the model may have run" in error.message
    assert connection_cut(exc) is Cut.LOST


@pytest.mark.parametrize(
    "exc", [bx.ReadTimeoutError(endpoint_url=URL), aiohttp.ServerTimeoutError("Timeout")]
)
@pytest.mark.parametrize("phase", list(Phase))
def test_read_timeout_is_deadline_exceeded_in_every_phase(exc: Exception, phase: Phase) -> None:
    error = map_aws_error(exc, ENDPOINT, phase)
    assert (error.kind, error.reason, error.retry_after_s) == (
        ErrorKind.DEADLINE_EXCEEDED,
        "UPSTREAM_READ_TIMEOUT",
        None,
    )
    assert "aws.read_timeout_s" in error.message
    assert connection_cut(exc) is Cut.TIMED_OUT


def test_other_botocore_errors_are_internal_client_errors() -> None:
    error = mapped(bx.ParamValidationError(report="Invalid length for parameter Body"))
    assert (error.kind, error.reason) == (ErrorKind.INTERNAL, "AWS_CLIENT_ERROR")
    assert error.message.endswith("ParamValidationError")


def test_domain_errors_pass_through_unchanged() -> None:
    original = SagewireError("already mapped", ErrorKind.NOT_FOUND, "UNKNOWN_MODEL")
    assert mapped(original) is original


def test_unknown_exception_is_internal_and_does_not_leak_its_text() -> None:
    error = mapped(RuntimeError("secret payload {'ssn': '123-45-6789'}"))
    assert (error.kind, error.reason) == (ErrorKind.INTERNAL, "INTERNAL")
    assert error.message == "internal error"
    assert error.metadata == {}


def test_every_reason_of_the_error_table_is_documented() -> None:
    table = Path(error_table.__file__).read_text()
    reasons = set(re.findall(r'Row\(_\w+, "([A-Z0-9_]+)"', table))
    assert len(reasons) > 15
    documented = Path(__file__).parents[2].joinpath("docs", "errors.md").read_text()
    assert {r for r in reasons if f"`{r}`" not in documented} == set()
