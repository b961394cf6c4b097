"""The client's exceptions: one hierarchy, one class per thing a caller handles differently.

Every failed call raises a subclass of `SagewireError` built from the gRPC status and its
`grpc-status-details-bin` trailer (google.rpc details, see docs/errors.md), or from the
`google.rpc.Status` a Converse `turn_error` carries. Switch on the class or on `reason` (the
ErrorInfo reason, stable), never on the message.

    SagewireError
    ├── InvalidArgument     INVALID_ARGUMENT; `.field` names the bad request field
    ├── NotFound            NOT_FOUND (unknown model, unknown or foreign job id)
    ├── ModelError          the model container answered with an error (`.model_status`,
    │                       `.model_message`); whatever gRPC code sagewire mapped it to
    ├── Unavailable         UNAVAILABLE (also a route shedding load); `.retry_after` (seconds)
    ├── QuotaExceeded       RESOURCE_EXHAUSTED (caller quotas, throttling); `.retry_after`
    ├── DeadlineExceeded    DEADLINE_EXCEEDED
    ├── Unauthenticated     UNAUTHENTICATED
    ├── PermissionDenied    PERMISSION_DENIED
    ├── Cancelled           CANCELLED (a Converse turn you cancelled, or the call)
    └── (the base class itself for every other code: FAILED_PRECONDITION, ABORTED, INTERNAL…)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from sagewire.v1 import common_pb2

_DETAILS_KEY = "grpc-status-details-bin"


class SagewireError(Exception):
    """A failed sagewire call.

    Attributes:
        code: the gRPC status code.
        message: the status message (says what to fix; never contains payloads).
        reason: google.rpc.ErrorInfo.reason ("" when the error did not come from sagewire, e.g.
            a deadline your own gRPC library enforced or a connection failure).
        metadata: ErrorInfo.metadata (e.g. `model`, `endpoint`, `aws_error_code`).
        retry_after: seconds from google.rpc.RetryInfo; None when retrying will not help.
        field_violations: (field, description) pairs from google.rpc.BadRequest.
        model_error: the model container's own answer (sagewire.v1.ModelErrorDetail), if any.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        details: Sequence[any_pb2.Any] = (),
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.reason = ""
        self.metadata: dict[str, str] = {}
        self.retry_after: float | None = None
        self.field_violations: list[tuple[str, str]] = []
        self.quota_violations: list[tuple[str, str]] = []
        self.model_error: common_pb2.ModelErrorDetail | None = None
        for packed in details:
            self._absorb(packed)

    def _absorb(self, packed: any_pb2.Any) -> None:
        if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            packed.Unpack(info)
            self.reason, self.metadata = info.reason, dict(info.metadata)
        elif packed.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            packed.Unpack(retry)
            self.retry_after = retry.retry_delay.ToTimedelta().total_seconds()
        elif packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            packed.Unpack(bad)
            self.field_violations = [(v.field, v.description) for v in bad.field_violations]
        elif packed.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            quota = error_details_pb2.QuotaFailure()
            packed.Unpack(quota)
            self.quota_violations = [(v.subject, v.description) for v in quota.violations]
        elif packed.Is(common_pb2.ModelErrorDetail.DESCRIPTOR):
            detail = common_pb2.ModelErrorDetail()
            packed.Unpack(detail)
            self.model_error = detail


class InvalidArgument(SagewireError):
    """The request is wrong; `field` names the first bad field ("" when none was named)."""

    @property
    def field(self) -> str:
        return self.field_violations[0][0] if self.field_violations else ""


class NotFound(SagewireError):
    """The model, job or turn does not exist (or is not yours)."""


class ModelError(SagewireError):
    """The model container itself answered with an error (SageMaker ModelError)."""

    @property
    def model_status(self) -> int:
        """HTTP status the container answered with."""
        return self.model_error.original_status_code if self.model_error else 0

    @property
    def model_message(self) -> str:
        """The container's own error text (bounded by sagewire)."""
        return self.model_error.original_message if self.model_error else ""


class Unavailable(SagewireError):
    """Transient (an endpoint or this replica busy, a route shedding load): retry after
    `retry_after` seconds (when set), with backoff."""


class QuotaExceeded(SagewireError):
    """A caller quota or SageMaker throttling; back off `retry_after`."""


class DeadlineExceeded(SagewireError):
    """The call's deadline (yours or the route's) passed before it finished."""


class Unauthenticated(SagewireError):
    """No valid credentials were presented."""


class PermissionDenied(SagewireError):
    """The caller is known but may not do this."""


class Cancelled(SagewireError):
    """The call or Converse turn was cancelled."""


_BY_CODE: dict[grpc.StatusCode, type[SagewireError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.RESOURCE_EXHAUSTED: QuotaExceeded,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.CANCELLED: Cancelled,
}
_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def _make(code: grpc.StatusCode, message: str, details: Sequence[any_pb2.Any]) -> SagewireError:
    model_error = any(d.Is(common_pb2.ModelErrorDetail.DESCRIPTOR) for d in details)
    kind = ModelError if model_error else _BY_CODE.get(code, SagewireError)
    return kind(code, message, details)


def from_rpc_error(error: grpc.RpcError) -> SagewireError:
    """The exception for a failed call (grpc.aio.AioRpcError or a blocking grpc.RpcError)."""
    call = cast("Any", error)  # both carry code()/details()/trailing_metadata()
    details: Sequence[any_pb2.Any] = ()
    for key, value in call.trailing_metadata() or ():
        if key == _DETAILS_KEY:
            details = status_pb2.Status.FromString(value).details
    return _make(call.code(), call.details() or "", details)


def from_status(status: status_pb2.Status) -> SagewireError:
    """The exception for an in-band google.rpc.Status (a Converse `turn_error`)."""
    code = _CODE_BY_NUMBER.get(status.code, grpc.StatusCode.UNKNOWN)
    return _make(code, status.message, status.details)


__all__ = [
    "Cancelled",
    "DeadlineExceeded",
    "InvalidArgument",
    "ModelError",
    "NotFound",
    "PermissionDenied",
    "QuotaExceeded",
    "SagewireError",
    "Unauthenticated",
    "Unavailable",
    "from_rpc_error",
    "from_status",
]
