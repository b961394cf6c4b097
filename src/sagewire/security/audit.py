"""The audit log: one line per denied call on the `sagewire.audit` logger, with the principal
(or "-" when unauthenticated), the method, the model, the status and the reason.

Never logged: tokens, API keys, certificates, custom attributes or payloads. Caller-chosen
strings are cut short and quoted (model names, principals) or escaped (the method: on the REST
bridge the requested path, where a percent-encoded line break decodes to a real one), so a
hostile value cannot forge log lines.
"""

from __future__ import annotations

import logging

from sagewire.core.errors import SagewireError

log = logging.getLogger("sagewire.audit")

_MAX_FIELD = 128


def _quoted(value: str) -> str:
    return repr(value[:_MAX_FIELD])


def _escaped(value: str) -> str:
    """`value` with line breaks and other unprintable characters escaped as repr escapes them,
    unquoted (a gRPC method reads as before: /sagewire.v1.InferenceService/Invoke)."""
    return value if value.isprintable() else repr(value)[1:-1]


def denied(principal: str | None, method: str, model: str, error: SagewireError) -> None:
    log.warning(
        "denied principal=%s method=%s model=%s status=%s reason=%s",
        _quoted(principal or "-"),
        _escaped(method),
        _quoted(model),
        error.kind.name,
        error.reason,
        extra={
            "audit": True,
            "principal": principal or "-",
            "rpc_method": method,
            "model": model[:_MAX_FIELD],
            "status": error.kind.name,
            "reason": error.reason,
        },
    )
