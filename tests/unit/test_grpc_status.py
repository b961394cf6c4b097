"""Domain error → gRPC status with google.rpc details, decoded the way a client decodes them."""

from __future__ import annotations

from typing import Any

import botocore.exceptions
import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from sagewire.aws.errors import map_aws_error
from sagewire.core.errors import (
    ErrorKind,
    FieldViolation,
    ModelFailure,
    SagewireError,
    deadline_exceeded,
    invalid_argument,
    model_not_found,
    unimplemented,
)
from sagewire.transports.grpc.status import PUSHBACK_KEY, to_grpc_status
from sagewire.v1 import common_pb2
from support import wire_metadata_bytes

DETAIL_TYPES: dict[str, Any] = {
    "google.rpc.ErrorInfo": error_details_pb2.ErrorInfo,
    "google.rpc.BadRequest": error_details_pb2.BadRequest,
    "google.rpc.RetryInfo": error_details_pb2.RetryInfo,
    "sagewire.v1.ModelErrorDetail": common_pb2.ModelErrorDetail,
}


def decode(error: SagewireError) -> tuple[grpc.StatusCode, str, dict[str, Any]]:
    """(code, message, {detail type name: unpacked detail}) as a client would read them."""
    status = to_grpc_status(error)
    trailers = dict(status.trailing_metadata)
    assert set(trailers) == {"grpc-status-details-bin", "grpc-retry-pushback-ms"}
    rpc = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    assert rpc.code == status.code.value[0]
    assert rpc.message == status.details
    details: dict[str, Any] = {}
    for packed in rpc.details:
        name = packed.TypeName()
        message = DETAIL_TYPES[name]()
        assert packed.Unpack(message)
        assert name not in details, f"{name} sent twice"
        details[name] = message
    return status.code, status.details, details


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        (ErrorKind.INVALID_ARGUMENT, grpc.StatusCode.INVALID_ARGUMENT),
        (ErrorKind.NOT_FOUND, grpc.StatusCode.NOT_FOUND),
        (ErrorKind.FAILED_PRECONDITION, grpc.StatusCode.FAILED_PRECONDITION),
        (ErrorKind.PERMISSION_DENIED, grpc.StatusCode.PERMISSION_DENIED),
        (ErrorKind.RESOURCE_EXHAUSTED, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (ErrorKind.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE),
        (ErrorKind.DEADLINE_EXCEEDED, grpc.StatusCode.DEADLINE_EXCEEDED),
        (ErrorKind.CANCELLED, grpc.StatusCode.CANCELLED),
        (ErrorKind.UNIMPLEMENTED, grpc.StatusCode.UNIMPLEMENTED),
        (ErrorKind.INTERNAL, grpc.StatusCode.INTERNAL),
        (ErrorKind.ABORTED, grpc.StatusCode.ABORTED),
        (ErrorKind.UNAUTHENTICATED, grpc.StatusCode.UNAUTHENTICATED),
    ],
)
def test_each_kind_maps_to_its_code_with_error_info(kind: ErrorKind, code: grpc.StatusCode) -> None:
    error = SagewireError("what to fix", kind=kind, reason="SOME_REASON", metadata={"k": "v"})
    got_code, message, details = decode(error)
    assert got_code is code
    assert message == "what to fix"
    assert list(details) == ["google.rpc.ErrorInfo"]
    info = details["google.rpc.ErrorInfo"]
    assert (info.reason, info.domain, dict(info.metadata)) == (
        "SOME_REASON",
        "sagewire",
        {"k": "v"},
    )


def test_every_kind_is_in_the_table() -> None:
    for kind in ErrorKind:
        to_grpc_status(SagewireError("x", kind=kind))


def test_field_violations_become_bad_request() -> None:
    _, message, details = decode(invalid_argument("options.target_variant", "must be short"))
    assert message == "options.target_variant: must be short"
    assert list(details) == ["google.rpc.ErrorInfo", "google.rpc.BadRequest"]
    [violation] = details["google.rpc.BadRequest"].field_violations
    assert (violation.field, violation.description) == ("options.target_variant", "must be short")


def test_several_violations_are_all_sent() -> None:
    error = SagewireError(
        "two problems",
        kind=ErrorKind.INVALID_ARGUMENT,
        violations=(FieldViolation("a", "bad"), FieldViolation("b", "worse")),
    )
    _, _, details = decode(error)
    assert [v.field for v in details["google.rpc.BadRequest"].field_violations] == ["a", "b"]


@pytest.mark.parametrize(
    ("retry_after_s", "seconds", "nanos"),
    [(0.2, 0, 200_000_000), (1.0, 1, 0), (5.0, 5, 0), (1.5, 1, 500_000_000)],
)
def test_retry_after_becomes_retry_info(retry_after_s: float, seconds: int, nanos: int) -> None:
    error = SagewireError("busy", kind=ErrorKind.UNAVAILABLE, retry_after_s=retry_after_s)
    _, _, details = decode(error)
    assert list(details) == ["google.rpc.ErrorInfo", "google.rpc.RetryInfo"]
    delay = details["google.rpc.RetryInfo"].retry_delay
    assert (delay.seconds, delay.nanos) == (seconds, nanos)


def test_retry_after_is_also_grpc_retry_pushback() -> None:
    busy = to_grpc_status(SagewireError("busy", kind=ErrorKind.UNAVAILABLE, retry_after_s=1.5))
    assert ("grpc-retry-pushback-ms", "1500") in busy.trailing_metadata


def test_errors_a_retry_cannot_fix_carry_pushback_minus_one() -> None:
    # gRFC A6: a negative pushback stops a client's retry policy even for a code it retries.
    for kind in ErrorKind:
        final = to_grpc_status(SagewireError("no", kind=kind))
        assert ("grpc-retry-pushback-ms", "-1") in final.trailing_metadata


def test_model_failure_becomes_model_error_detail() -> None:
    error = SagewireError(
        "model failed",
        kind=ErrorKind.INVALID_ARGUMENT,
        reason="MODEL_ERROR",
        model_failure=ModelFailure(422, '{"error":"bad input"}', "arn:aws:logs:x"),
    )
    _, _, details = decode(error)
    assert list(details) == ["google.rpc.ErrorInfo", "sagewire.v1.ModelErrorDetail"]
    detail = details["sagewire.v1.ModelErrorDetail"]
    assert detail.original_status_code == 422
    assert detail.original_message == '{"error":"bad input"}'
    assert detail.log_stream_arn == "arn:aws:logs:x"


def test_model_error_from_sagemaker_end_to_end() -> None:
    exc = botocore.exceptions.ClientError(
        {
            "Error": {"Code": "ModelError", "Message": "Received client error (429)"},
            "OriginalStatusCode": 429,
            "OriginalMessage": "slow down",
        },
        "InvokeEndpoint",
    )
    code, message, details = decode(map_aws_error(exc, "ep"))
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert message == "model behind endpoint 'ep' failed with status 429: slow down"
    assert details["google.rpc.ErrorInfo"].reason == "MODEL_ERROR"
    assert details["google.rpc.ErrorInfo"].metadata["original_status_code"] == "429"
    assert details["google.rpc.RetryInfo"].retry_delay.seconds == 1
    assert details["sagewire.v1.ModelErrorDetail"].original_status_code == 429


@pytest.mark.parametrize(
    ("error", "code", "reason", "message"),
    [
        (
            model_not_found("nope", ["b", "a"]),
            grpc.StatusCode.NOT_FOUND,
            "UNKNOWN_MODEL",
            "unknown model 'nope'; known models: a, b",
        ),
        (
            unimplemented("Converse"),
            grpc.StatusCode.UNIMPLEMENTED,
            "NOT_IMPLEMENTED",
            "Converse is not implemented yet in this sagewire version",
        ),
        (
            deadline_exceeded("model 'echo'", 0.25),
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "DEADLINE_EXCEEDED",
            "model 'echo' did not finish within 0.25s",
        ),
    ],
)
def test_core_error_helpers(
    error: SagewireError, code: grpc.StatusCode, reason: str, message: str
) -> None:
    got_code, got_message, details = decode(error)
    assert (got_code, got_message) == (code, message)
    assert details["google.rpc.ErrorInfo"].reason == reason
    assert "google.rpc.RetryInfo" not in details


def test_model_error_trailers_fit_the_default_metadata_limit() -> None:
    exc = botocore.exceptions.ClientError(
        {
            "Error": {"Code": "ModelError", "Message": "Received server error (500)"},
            "OriginalStatusCode": 500,
            "OriginalMessage": "Traceback (most recent call last): " + "x" * 8000,
        },
        "InvokeEndpoint",
    )
    assert wire_metadata_bytes(map_aws_error(exc, "ep")) < 8 * 1024


@pytest.mark.parametrize("retry_after_s", [1.0105, 1.011, 0.0999999, 2.0, 0.0004])
def test_the_pushback_trailer_equals_retry_infos_delay(retry_after_s: float) -> None:
    # A jittered 1.0105 s once gave RetryInfo 1010 ms and grpc-retry-pushback-ms 1011.
    error = SagewireError(
        message="busy", kind=ErrorKind.UNAVAILABLE, reason="X", retry_after_s=retry_after_s
    )
    status = to_grpc_status(error)
    trailers = dict(status.trailing_metadata)
    details = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    info = error_details_pb2.RetryInfo()
    assert any(d.Unpack(info) for d in details.details)
    assert trailers[PUSHBACK_KEY] == str(info.retry_delay.ToMilliseconds())
