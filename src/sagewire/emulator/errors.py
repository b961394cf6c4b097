"""SageMaker Runtime error responses, in one table.

Why: botocore decides which ``ClientError`` code a caller sees from the ``x-amzn-ErrorType``
header (and, for modelled errors such as ModelError, lifts extra body fields like
``OriginalStatusCode`` into ``e.response``). Every error the emulator returns is built here so
that the status, the header and the body shape always agree with the service model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

ACCOUNT_ID = "123456789012"
REGION = "us-east-1"
ERROR_TYPE_HEADER = "x-amzn-ErrorType"


@dataclass
class ApiError(Exception):
    """An error answer: HTTP status, botocore error code, message and modelled extra fields."""

    status: int
    code: str
    message: str
    fields: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.code} ({self.status}): {self.message}"

    def body(self) -> bytes:
        """The JSON body: ``{"message": ...}`` plus any modelled fields."""
        return json.dumps({"message": self.message, **self.fields}).encode()


def validation_error(message: str) -> ApiError:
    return simple_error("validation", message)


def endpoint_not_found(name: str) -> ApiError:
    return validation_error(f"Endpoint {name} of account {ACCOUNT_ID} not found.")


def oversize_body(request_id: str) -> ApiError:
    return validation_error(f"Request {request_id} has oversize body.")


def log_stream_arn(endpoint: str) -> str:
    return f"arn:aws:logs:{REGION}:{ACCOUNT_ID}:log-group:/aws/sagemaker/Endpoints/{endpoint}"


def model_error(
    endpoint: str,
    original_status: int | None,
    original_message: str,
    *,
    message: str | None = None,
) -> ApiError:
    """ModelError (424): the model container answered with an error (or not at all).

    ``original_status`` None means the container gave no status (timeout, unreachable); then
    ``OriginalStatusCode`` is left out of the body, as botocore then leaves it out of
    ``e.response``.
    """
    if message is None:
        kind = "client" if original_status is not None and original_status < 500 else "server"
        status_text = original_status if original_status is not None else 0
        message = (
            f"Received {kind} error ({status_text}) from primary with message "
            f'"{original_message}". See https://{REGION}.console.aws.amazon.com/cloudwatch/'
            f"home?region={REGION}#logEventViewer:group=/aws/sagemaker/Endpoints/{endpoint} "
            f"in account {ACCOUNT_ID} for more information."
        )
    fields: dict[str, Any] = {"OriginalMessage": original_message}
    if original_status is not None:
        fields["OriginalStatusCode"] = original_status
    fields["LogStreamArn"] = log_stream_arn(endpoint)
    return ApiError(424, "ModelError", message, fields)


MODEL_TIMEOUT_MESSAGE = "The model did not respond within 60 seconds."


def model_timeout(endpoint: str) -> ApiError:
    """ModelError (424) for a container that did not answer within SageMaker's 60 s."""
    return model_error(
        endpoint,
        None,
        MODEL_TIMEOUT_MESSAGE,
        message=(
            "Your invocation timed out while waiting for a response from container primary. "
            + MODEL_TIMEOUT_MESSAGE
        ),
    )


# Errors that are just a status, a code and a message, keyed by the names faults use.
SIMPLE_ERRORS: dict[str, tuple[int, str, str]] = {
    "validation": (400, "ValidationError", "Injected validation error."),
    "throttling": (400, "ThrottlingException", "Rate exceeded"),
    "model_not_ready": (429, "ModelNotReadyException", "Model is not ready to serve requests yet."),
    "internal_failure": (500, "InternalFailure", "An internal failure occurred."),
    "service_unavailable": (503, "ServiceUnavailable", "Service is temporarily unavailable."),
    "internal_dependency": (530, "InternalDependencyException", "An internal dependency failed."),
}


def simple_error(kind: str, message: str | None = None) -> ApiError:
    """One of ``SIMPLE_ERRORS``, with its default message unless ``message`` is given."""
    status, code, default = SIMPLE_ERRORS[kind]
    return ApiError(status, code, message or default)


def unknown_operation(method: str, path: str) -> ApiError:
    return ApiError(404, "UnknownOperationException", f"No operation matches {method} {path}.")
