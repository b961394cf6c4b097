"""Which per-call options each SageMaker operation takes: one table for start-up checks (a
route may only allow or default what its mode's operation takes) and per-call checks (an option
the operation has no parameter for is refused, never silently dropped).

Facts from botocore's sagemaker-runtime model (2017-05-13) and the SageMaker Runtime HTTP2
model (2025-10-01); see docs/configuration.md, "Options per operation". `framing` is sagewire's
own: how answers of InvokeEndpoint (Converse turns) and of the response stream become messages.
A leaf module (no sagewire imports), so both config and core can use it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum


class Operation(StrEnum):
    """The SageMaker Runtime operations sagewire calls."""

    INVOKE_ENDPOINT = "InvokeEndpoint"
    RESPONSE_STREAM = "InvokeEndpointWithResponseStream"
    ASYNC = "InvokeEndpointAsync"
    BIDI = "InvokeEndpointWithBidirectionalStream"


# Option name (InvocationOptions / route `allow`) → the operation's parameter.
PARAMETERS: Mapping[str, str] = {
    "custom_attributes": "CustomAttributes",
    "target_variant": "TargetVariant",
    "target_model": "TargetModel",
    "inference_component": "InferenceComponentName",
    "target_container_hostname": "TargetContainerHostname",
    "inference_id": "InferenceId",
    "session_id": "SessionId",
    "enable_explanations": "EnableExplanations",
    "request_ttl_seconds": "RequestTTLSeconds",
    "invocation_timeout_seconds": "InvocationTimeoutSeconds",
    "framing": "(sagewire's framing of answers)",
}

OPTIONS: Mapping[Operation, frozenset[str]] = {
    Operation.INVOKE_ENDPOINT: frozenset(
        {
            "custom_attributes",
            "target_variant",
            "target_model",
            "inference_component",
            "target_container_hostname",
            "inference_id",
            "session_id",
            "enable_explanations",
            "framing",
        }
    ),
    # No TargetModel, no EnableExplanations.
    Operation.RESPONSE_STREAM: frozenset(
        {
            "custom_attributes",
            "target_variant",
            "inference_component",
            "target_container_hostname",
            "inference_id",
            "session_id",
            "framing",
        }
    ),
    Operation.ASYNC: frozenset(
        {"custom_attributes", "inference_id", "request_ttl_seconds", "invocation_timeout_seconds"}
    ),
    # Its other parameters (ModelInvocationPath, ModelQueryString) are route settings.
    Operation.BIDI: frozenset({"target_variant"}),
}

# The operation each route mode calls (Invoke on a `stream` route calls InvokeEndpoint, which
# takes everything the response stream takes).
MODE_OPERATION: Mapping[str, Operation] = {
    "realtime": Operation.INVOKE_ENDPOINT,
    "stream": Operation.RESPONSE_STREAM,
    "async": Operation.ASYNC,
    "bidi": Operation.BIDI,
}


def unsupported(operation: Operation, names: Iterable[str]) -> list[str]:
    """The names among `names` that `operation` takes no parameter for, in order."""
    return [name for name in names if name not in OPTIONS[operation]]


def takes(operation: Operation) -> str:
    """The options `operation` takes, for messages ("custom_attributes, inference_id")."""
    return ", ".join(sorted(OPTIONS[operation]))
