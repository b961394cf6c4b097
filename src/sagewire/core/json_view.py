"""The rule for JSON numbers crossing a google.protobuf.Value, in both directions.

A Value holds every number as an IEEE-754 double, so a JSON document and its Value can
disagree: `9007199254740993` becomes 9007199254740992, `9223372036854775807` becomes
9.223372036854776e18. Every transport shows a model's JSON answer through the same rule, so the
parsed view never silently differs from the bytes (the REST bridge reuses it too):

- **Answers** (`json` views of Invoke, InvokeStream records, Converse chunks, async results):
  `parse_view` gives the document only when every number in it reads back from a double as
  written: integers within ±2^53, and other numbers whose shortest double rendering has the
  same decimal value as their text (`0.1`, `2.5e-3`, `1e300` do; `0.30000000000000000001`,
  `1e400` do not). Otherwise there is no view, and callers read `body`.
- **Requests** (a caller's `json`): `request_number` turns each double back into a JSON number:
  integral values within ±2^53 are sent as integers (`20`, not `20.0`), other values as the
  shortest decimal that reads back as the same double, and values beyond ±2^53 are refused:
  there a double cannot tell an integer from its neighbours, so the number may not be the one
  the caller wrote (a 64-bit id rounded by a JSON encoder, typically). Exact 64-bit integers
  travel in `body`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from sagewire.core.errors import SagewireError, invalid_argument

# The largest magnitude below which every integer is exactly one double.
MAX_EXACT_INT = 2**53
# Longest integer text that can be within ±2^53 ("-9007199254740992").
_MAX_INT_CHARS = len(str(-MAX_EXACT_INT))


class _Inexact(ValueError):
    """A number in the document has no exact double."""


def _exact_int(text: str) -> int:
    if len(text) > _MAX_INT_CHARS:
        raise _Inexact
    number = int(text)
    if abs(number) > MAX_EXACT_INT:
        raise _Inexact
    return number


def _exact_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise _Inexact
    shortest = repr(number)
    if shortest != text:
        try:
            if Decimal(shortest) != Decimal(text):
                raise _Inexact
        except InvalidOperation:
            raise _Inexact from None
    return number


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


@dataclass(frozen=True, slots=True)
class JsonView:
    """A parsed JSON document whose numbers are all exact as doubles (`document` may be None,
    for JSON `null`)."""

    document: Any


def parse_view(data: bytes) -> JsonView | None:
    """`data` parsed, when it is valid JSON and every number in it is exact as a double;
    None otherwise (not JSON, NaN/Infinity, or a number a double would change)."""
    try:
        return JsonView(
            json.loads(
                data,
                parse_int=_exact_int,
                parse_float=_exact_float,
                parse_constant=_no_constants,
            )
        )
    except (ValueError, RecursionError):  # _Inexact, bad JSON, bad UTF-8
        return None


def request_number(value: float, where: str) -> int | float:
    """A caller's Value number as the JSON number sent to the model (see the module doc).

    `where` names the number's place in the caller's document (for the error message).
    Raises INVALID_ARGUMENT (field `json`) for NaN, Infinity and magnitudes beyond ±2^53.
    """
    if not math.isfinite(value):
        raise invalid_argument("json", f"{where}: NaN and Infinity are not valid JSON numbers")
    if abs(value) > MAX_EXACT_INT:
        raise exact_integer_needs_body(value, where)
    if value.is_integer():
        return int(value)
    return value


def exact_integer_needs_body(value: float, where: str) -> SagewireError:
    return invalid_argument(
        "json",
        f"{where}: the number {value!r} is beyond ±2^53 (9007199254740992), where a "
        "google.protobuf.Value (a double) may already differ from the number you wrote; "
        "send exact 64-bit integers and other large numbers in `body`",
    )


def dumps(document: Any) -> bytes:
    """Compact UTF-8 JSON, as sagewire sends a caller's `json`."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
