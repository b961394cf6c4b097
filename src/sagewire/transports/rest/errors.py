"""Domain errors as HTTP answers: the same google.rpc.Status the gRPC edge sends, as JSON.

The status and its details come from the one error table (transports.grpc.status); this module
adds only the standard google.rpc.Code → HTTP mapping (the comments of google/rpc/code.proto,
as grpc-gateway and Envoy apply it) and `Retry-After` from the RetryInfo detail. Requests the
bridge itself cannot read (bad JSON, unknown path, wrong method, oversize body) get the same
shape, with the HTTP status that names the problem (404, 405, 413).
"""

from __future__ import annotations

import json
import math
from typing import Any

from aiohttp import web
from google.protobuf import json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2

from sagewire.core.errors import ErrorKind, SagewireError, invalid_argument
from sagewire.observability import calls
from sagewire.transports.grpc.status import to_rpc_status

JSON_TYPE = "application/json"

# google/rpc/code.proto: each code's HTTP mapping.
HTTP_STATUS: dict[int, int] = {
    code_pb2.OK: 200,
    code_pb2.CANCELLED: 499,
    code_pb2.UNKNOWN: 500,
    code_pb2.INVALID_ARGUMENT: 400,
    code_pb2.DEADLINE_EXCEEDED: 504,
    code_pb2.NOT_FOUND: 404,
    code_pb2.ALREADY_EXISTS: 409,
    code_pb2.PERMISSION_DENIED: 403,
    code_pb2.UNAUTHENTICATED: 401,
    code_pb2.RESOURCE_EXHAUSTED: 429,
    code_pb2.FAILED_PRECONDITION: 400,
    code_pb2.ABORTED: 409,
    code_pb2.OUT_OF_RANGE: 400,
    code_pb2.UNIMPLEMENTED: 501,
    code_pb2.INTERNAL: 500,
    code_pb2.UNAVAILABLE: 503,
    code_pb2.DATA_LOSS: 500,
}


def http_status(status: status_pb2.Status) -> int:
    return HTTP_STATUS.get(status.code, 500)


def status_dict(error: SagewireError) -> dict[str, Any]:
    """The google.rpc.Status of `error` in the proto3 JSON mapping (details with "@type")."""
    return json_format.MessageToDict(to_rpc_status(error))


def retry_after_s(status: status_pb2.Status) -> int | None:
    """Whole seconds of the RetryInfo detail, rounded up (Retry-After has no fractions)."""
    for packed in status.details:
        if packed.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            packed.Unpack(info)
            return max(1, math.ceil(int(info.retry_delay.ToNanoseconds()) / 1e9))
    return None


# Errors of HTTP itself, whose status says more than the google.rpc.Code mapping does.
_HTTP_OVERRIDES = {"METHOD_NOT_ALLOWED": 405, "REQUEST_TOO_LARGE": 413}


def error_response(error: SagewireError) -> web.Response:
    """The HTTP answer for a domain error: mapped status, Status JSON body, Retry-After
    (and Allow on a 405)."""
    status = to_rpc_status(error)
    calls.failed(code_pb2.Code.Name(status.code), error.reason)  # for access record and metrics
    headers = {}
    retry = retry_after_s(status)
    if retry is not None:
        headers["Retry-After"] = str(retry)
    if error.reason == "METHOD_NOT_ALLOWED":
        headers["Allow"] = error.metadata["allow"]
    return web.Response(
        status=_HTTP_OVERRIDES.get(error.reason) or http_status(status),
        body=json.dumps(json_format.MessageToDict(status), separators=(",", ":")).encode(),
        content_type=JSON_TYPE,
        headers=headers,
    )


# -- Requests the bridge cannot read --------------------------------------------------------


def malformed_json(problem: str) -> SagewireError:
    return invalid_argument("body", f"request body is not valid JSON: {problem}", "MALFORMED_JSON")


def bad_field(field: str, problem: str) -> SagewireError:
    return invalid_argument(field, problem, "INVALID_JSON_FIELD")


def unknown_path(method: str, path: str) -> SagewireError:
    return SagewireError(
        message=f"no REST route matches {method} {path} (see docs/rest.md for the routes)",
        kind=ErrorKind.NOT_FOUND,
        reason="UNKNOWN_ROUTE",
    )


def method_not_allowed(method: str, path: str, allowed: list[str]) -> SagewireError:
    return SagewireError(
        message=f"{path} does not accept {method}; it accepts {', '.join(allowed)}",
        kind=ErrorKind.UNIMPLEMENTED,
        reason="METHOD_NOT_ALLOWED",
        metadata={"allow": ",".join(allowed)},
    )


def body_too_large(limit: int) -> SagewireError:
    return SagewireError(
        message=f"request body is larger than rest.max_request_bytes ({limit} bytes)",
        kind=ErrorKind.RESOURCE_EXHAUSTED,
        reason="REQUEST_TOO_LARGE",
        metadata={"limit_bytes": str(limit)},
    )
