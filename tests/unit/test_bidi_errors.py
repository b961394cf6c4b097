"""The HTTP/2 bidirectional stream's SDK and transport failures → domain errors."""

from __future__ import annotations

import pytest

from sagewire.aws.errors import (
    bidi_connection_lost,
    bidi_input_stalled,
    map_bidi_error,
    map_bidi_transport_error,
)
from sagewire.core.errors import ErrorKind


@pytest.mark.parametrize(
    ("code", "fields", "kind", "reason"),
    [
        (
            "ModelStreamError",
            {"ErrorCode": "StreamBroken"},
            ErrorKind.UNAVAILABLE,
            "MODEL_STREAM_BROKEN",
        ),
        (
            "ModelStreamError",
            {"ErrorCode": "ModelInvocationTimeExceeded"},
            ErrorKind.DEADLINE_EXCEEDED,
            "MODEL_STREAM_TIMEOUT",
        ),
        ("ModelStreamError", {}, ErrorKind.INTERNAL, "MODEL_STREAM_ERROR"),
        ("InternalStreamFailure", {}, ErrorKind.UNAVAILABLE, "SAGEMAKER_STREAM_FAILURE"),
        ("InputValidationError", {}, ErrorKind.INVALID_ARGUMENT, "SAGEMAKER_VALIDATION"),
        ("ServiceUnavailableError", {}, ErrorKind.UNAVAILABLE, "SAGEMAKER_UNAVAILABLE"),
        ("InternalServerError", {}, ErrorKind.INTERNAL, "SAGEMAKER_INTERNAL_FAILURE"),
        ("ThrottlingException", {}, ErrorKind.RESOURCE_EXHAUSTED, "THROTTLED"),
    ],
)
def test_http2_error_names_use_the_same_table(
    code: str, fields: dict[str, object], kind: ErrorKind, reason: str
) -> None:
    error = map_bidi_error(code, "boom", fields, "ep")
    assert (error.kind, error.reason) == (kind, reason)
    assert error.metadata["aws_error_code"]


def test_a_missing_endpoint_and_a_missing_variant_differ() -> None:
    missing = map_bidi_error(
        "InputValidationError", "Endpoint ep of account 1 not found.", {}, "ep"
    )
    assert missing.reason == "ENDPOINT_NOT_FOUND"
    variant = map_bidi_error(
        "InputValidationError", "Target variant B not found for endpoint ep.", {}, "ep"
    )
    assert variant.reason == "SAGEMAKER_VALIDATION"


def test_model_error_keeps_the_container_answer() -> None:
    error = map_bidi_error(
        "ModelError",
        "Received server error",
        {"OriginalStatusCode": 503, "OriginalMessage": "busy", "LogStreamArn": "arn:x"},
        "ep",
    )
    assert error.reason == "MODEL_ERROR"
    assert error.kind is ErrorKind.UNAVAILABLE
    assert error.model_failure is not None
    assert (error.model_failure.original_status_code, error.model_failure.original_message) == (
        503,
        "busy",
    )


def test_transport_failures() -> None:
    tls = map_bidi_transport_error("AWS_IO_TLS_ERROR_NEGOTIATION_FAILURE", "ep")
    assert (tls.kind, tls.reason, tls.retry_after_s) == (
        ErrorKind.UNAVAILABLE,
        "UPSTREAM_TLS_FAILURE",
        None,
    )
    assert "aws.ca_bundle" in tls.message
    refused = map_bidi_transport_error("AWS_IO_SOCKET_CONNECTION_REFUSED", "ep")
    assert (refused.reason, refused.retry_after_s) == ("RUNTIME_UNREACHABLE", 1.0)
    assert bidi_connection_lost("ep").reason == "UPSTREAM_CONNECTION_LOST"
    stalled = bidi_input_stalled("ep", 10)
    assert (stalled.kind, stalled.reason) == (
        ErrorKind.RESOURCE_EXHAUSTED,
        "UPSTREAM_INPUT_STALLED",
    )
