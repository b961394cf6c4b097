"""SageMaker's per-field constraints as INVALID_ARGUMENT errors, checked before any network call.

The rules themselves (from the sagemaker-runtime service model) are in
`config.sagemaker_fields`, shared with the configuration's checks of route defaults.
"""

from __future__ import annotations

from sagewire.config.sagemaker_fields import NEW_SESSION, media_type_problem, option_problem
from sagewire.core.errors import SagewireError, invalid_argument
from sagewire.core.types import InvocationOptions

__all__ = [
    "NEW_SESSION",
    "media_type_error",
    "option_error",
    "validate_body_size",
    "validate_media_type",
    "validate_options",
]


def option_error(name: str, value: str) -> SagewireError | None:
    """The error SageMaker's rules give for option `name` = `value`, or None when valid."""
    problem = option_problem(name, value)
    return None if problem is None else invalid_argument(f"options.{name}", problem)


def validate_options(options: InvocationOptions) -> None:
    """Raise INVALID_ARGUMENT for the first option that SageMaker would reject."""
    for name in options.set_fields():
        error = option_error(name, getattr(options, name))
        if error is not None:
            raise error


def media_type_error(value: str, field: str = "content_type") -> SagewireError | None:
    """Content-Type / Accept travel as headers: ≤1024 printable ASCII."""
    problem = media_type_problem(value)
    return None if problem is None else invalid_argument(field, problem)


# Media types already found valid: callers send the same few on every call, and the check is a
# regular expression over up to 1,024 characters. Bounded, since callers choose the strings.
_VALID_MEDIA_TYPES: set[str] = set()
_MAX_REMEMBERED = 256


def validate_media_type(field: str, value: str) -> None:
    if value in _VALID_MEDIA_TYPES:
        return
    error = media_type_error(value, field)
    if error is not None:
        raise error
    if len(_VALID_MEDIA_TYPES) < _MAX_REMEMBERED:
        _VALID_MEDIA_TYPES.add(value)


def validate_body_size(size: int, limit: int) -> None:
    if size > limit:
        raise invalid_argument(
            "body",
            f"is {size} bytes; SageMaker accepts at most {limit} bytes per request",
            reason="PAYLOAD_TOO_LARGE",
        )
