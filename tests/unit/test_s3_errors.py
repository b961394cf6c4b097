"""S3 failures → domain errors (sagewire.aws.errors.map_s3_error), with real botocore classes."""

from __future__ import annotations

import aiohttp
import pytest
from botocore import exceptions as bx

from sagewire.aws.errors import map_s3_error
from sagewire.core.async_types import S3Location
from sagewire.core.errors import ErrorKind, SagewireError

LOCATION = S3Location("staging-bucket", "sagewire/async-inputs/summarise/0f3c")


def client_error(code: str, status: int = 400) -> bx.ClientError:
    return bx.ClientError(
        {
            "Error": {"Code": code, "Message": "S3 says so"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "PutObject",
    )


@pytest.mark.parametrize(
    ("exc", "kind", "reason", "retry"),
    [
        (
            client_error("NoSuchBucket", 404),
            ErrorKind.FAILED_PRECONDITION,
            "S3_BUCKET_NOT_FOUND",
            None,
        ),
        (client_error("NoSuchKey", 404), ErrorKind.NOT_FOUND, "S3_OBJECT_NOT_FOUND", None),
        (client_error("AccessDenied", 403), ErrorKind.PERMISSION_DENIED, "AWS_ACCESS_DENIED", None),
        (client_error("SlowDown", 503), ErrorKind.UNAVAILABLE, "S3_UNAVAILABLE", 1.0),
        (client_error("InternalError", 500), ErrorKind.UNAVAILABLE, "S3_UNAVAILABLE", 1.0),
        (client_error("EntityTooSmall"), ErrorKind.INTERNAL, "S3_ERROR", None),
        (
            bx.EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
            ErrorKind.UNAVAILABLE,
            "S3_UNREACHABLE",
            1.0,
        ),
        (aiohttp.ClientPayloadError("cut"), ErrorKind.UNAVAILABLE, "S3_UNREACHABLE", 1.0),
        (
            bx.ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
            ErrorKind.DEADLINE_EXCEEDED,
            "UPSTREAM_READ_TIMEOUT",
            None,
        ),
        (bx.NoCredentialsError(), ErrorKind.INTERNAL, "AWS_CREDENTIALS_MISSING", None),
    ],
)
def test_s3_failures(exc: BaseException, kind: ErrorKind, reason: str, retry: float | None) -> None:
    error = map_s3_error(exc, LOCATION)
    assert (error.kind, error.reason, error.retry_after_s) == (kind, reason, retry)
    # The bucket may be named; the object key (a staged input, a result) never is.
    assert LOCATION.key not in error.message
    assert "S3 says so" not in error.message


def test_client_errors_carry_the_code_and_bucket() -> None:
    error = map_s3_error(client_error("NoSuchBucket", 404), LOCATION)
    assert error.metadata == {"aws_error_code": "NoSuchBucket", "bucket": "staging-bucket"}
    assert "'staging-bucket' does not exist" in error.message


def test_domain_errors_pass_through() -> None:
    original = SagewireError("already mapped", ErrorKind.INVALID_ARGUMENT, "X")
    assert map_s3_error(original, LOCATION) is original
