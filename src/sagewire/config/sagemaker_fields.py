"""SageMaker's per-field constraints on the options and media types sagewire sends, as pure
string rules: each answers None (valid) or a description of the rule broken.

The limits come from the sagemaker-runtime service model (botocore). Header values must also
be printable ASCII, or they could not travel as HTTP headers at all.

Why here, below both configuration and core: the configuration checks route defaults with the
same rules the core applies to every call (`core.validation` wraps these answers in
INVALID_ARGUMENT errors), and neither may import the other's validators.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9])*")
_COMPONENT = re.compile(r"[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?")
_PRINTABLE = re.compile(r"[\x20-\x7e]*")
_PRINTABLE_NO_LEADING_SPACE = re.compile(r"[\x21-\x7e][\x20-\x7e]*")
NEW_SESSION = "NEW_SESSION"
MAX_MEDIA_TYPE_CHARS = 1024


def _check(value: str, max_len: int, pattern: re.Pattern[str], rule: str) -> str | None:
    if len(value) > max_len:
        return f"is {len(value)} characters; the limit is {max_len}"
    if not pattern.fullmatch(value):
        return f"must be {rule}"
    return None


_Rule = Callable[[str], str | None]
_HYPHENATED = "letters, digits and inner hyphens"
_NO_LEADING_SPACE = "printable ASCII not starting with a space"

OPTION_RULES: dict[str, _Rule] = {
    "custom_attributes": lambda v: _check(v, 1024, _PRINTABLE, "printable ASCII"),
    "target_variant": lambda v: _check(v, 63, _NAME, _HYPHENATED),
    "target_model": lambda v: _check(v, 1024, _PRINTABLE_NO_LEADING_SPACE, _NO_LEADING_SPACE),
    "inference_component": lambda v: _check(v, 63, _COMPONENT, _HYPHENATED),
    "target_container_hostname": lambda v: _check(v, 63, _NAME, _HYPHENATED),
    "inference_id": lambda v: _check(v, 64, _PRINTABLE_NO_LEADING_SPACE, _NO_LEADING_SPACE),
    "session_id": lambda v: (
        None
        if v == NEW_SESSION
        else _check(v, 256, _NAME, f"{NEW_SESSION} or a session id ({_HYPHENATED})")
    ),
    "enable_explanations": lambda v: _check(v, 64, _PRINTABLE, "printable ASCII"),
}
"""Option name (InvocationOptions field) → its rule."""


def option_problem(name: str, value: str) -> str | None:
    """What is wrong with option `name` = `value` by SageMaker's rules, or None when valid."""
    return OPTION_RULES[name](value)


def media_type_problem(value: str) -> str | None:
    """Content-Type / Accept travel as headers: ≤1024 printable ASCII."""
    return _check(value, MAX_MEDIA_TYPE_CHARS, _PRINTABLE, "printable ASCII")
