"""SageMaker's per-field constraints, checked before any network call.

The limits come from the sagemaker-runtime service model (botocore). Header values must also
be printable ASCII, or they could not travel as HTTP headers at all.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from sagewire.core.errors import SagewireError, invalid_argument
from sagewire.core.types import InvocationOptions

_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9])*")
_COMPONENT = re.compile(r"[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?")
_PRINTABLE = re.compile(r"[\x20-\x7e]*")
_PRINTABLE_NO_LEADING_SPACE = re.compile(r"[\x21-\x7e][\x20-\x7e]*")
NEW_SESSION = "NEW_SESSION"


def _check(
    field: str, value: str, max_len: int, pattern: re.Pattern[str], rule: str
) -> SagewireError | None:
    if len(value) > max_len:
        return invalid_argument(field, f"is {len(value)} characters; the limit is {max_len}")
    if not pattern.fullmatch(value):
        return invalid_argument(field, f"must be {rule}")
    return None


_Rule = Callable[[str], SagewireError | None]

_RULES: dict[str, _Rule] = {
    "custom_attributes": lambda v: _check(
        "options.custom_attributes", v, 1024, _PRINTABLE, "printable ASCII"
    ),
    "target_variant": lambda v: _check(
        "options.target_variant", v, 63, _NAME, "letters, digits and inner hyphens"
    ),
    "target_model": lambda v: _check(
        "options.target_model",
        v,
        1024,
        _PRINTABLE_NO_LEADING_SPACE,
        "printable ASCII not starting with a space",
    ),
    "inference_component": lambda v: _check(
        "options.inference_component", v, 63, _COMPONENT, "letters, digits and inner hyphens"
    ),
    "target_container_hostname": lambda v: _check(
        "options.target_container_hostname", v, 63, _NAME, "letters, digits and inner hyphens"
    ),
    "inference_id": lambda v: _check(
        "options.inference_id",
        v,
        64,
        _PRINTABLE_NO_LEADING_SPACE,
        "printable ASCII not starting with a space",
    ),
    "session_id": lambda v: (
        None
        if v == NEW_SESSION
        else _check(
            "options.session_id",
            v,
            256,
            _NAME,
            f"{NEW_SESSION} or a session id (letters, digits and inner hyphens)",
        )
    ),
    "enable_explanations": lambda v: _check(
        "options.enable_explanations", v, 64, _PRINTABLE, "printable ASCII"
    ),
}


def option_error(name: str, value: str) -> SagewireError | None:
    """The error SageMaker's rules give for option `name` = `value`, or None when valid."""
    return _RULES[name](value)


def validate_options(options: InvocationOptions) -> None:
    """Raise INVALID_ARGUMENT for the first option that SageMaker would reject."""
    for name in options.set_fields():
        error = option_error(name, getattr(options, name))
        if error is not None:
            raise error


def media_type_error(value: str, field: str = "content_type") -> SagewireError | None:
    """Content-Type / Accept travel as headers: ≤1024 printable ASCII."""
    return _check(field, value, 1024, _PRINTABLE, "printable ASCII")


def validate_media_type(field: str, value: str) -> None:
    error = media_type_error(value, field)
    if error is not None:
        raise error


def validate_body_size(size: int, limit: int) -> None:
    if size > limit:
        raise invalid_argument(
            "body",
            f"is {size} bytes; SageMaker accepts at most {limit} bytes per request",
            reason="PAYLOAD_TOO_LARGE",
        )
