"""The JSON number rule (sagewire.core.json_view) and its use by the gRPC conversions: a `json`
view never differs from `body`, and a caller's `json` numbers are sent by one rule."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from google.protobuf import json_format, struct_pb2
from hypothesis import given
from hypothesis import strategies as st

from sagewire.core.errors import ErrorKind, SagewireError
from sagewire.core.json_view import MAX_EXACT_INT, parse_view
from sagewire.transports.grpc import convert
from sagewire.v1 import async_jobs_pb2, converse_pb2, invoke_pb2

# The instance that was reported: `json` showed 9.223372036854776e+18 and 9007199254740992.0.
PINNED = b'{"id": 9223372036854775807, "near53": 9007199254740993}'


@pytest.mark.parametrize(
    "text",
    [
        PINNED,
        b"9007199254740993",
        b"-9007199254740993",
        b"[1, 12345678901234567890]",
        b'{"a": 0.30000000000000000001}',
        b"1e400",
        b"-1e400",
        b"0.1000000000000000055511151231257827",
        b"1" + b"0" * 5000,  # beyond Python's int-digits limit
    ],
)
def test_answers_with_a_number_a_double_changes_have_no_view(text: bytes) -> None:
    assert parse_view(text) is None
    assert convert.json_view_value(text, 1 << 20) is None


@pytest.mark.parametrize(
    ("text", "document"),
    [
        (b"9007199254740992", 2**53),
        (b"-9007199254740992", -(2**53)),
        (b'{"n": 20, "p": 0.1, "e": 2.5e-3, "big": 1e300, "neg": -0.0}', None),
        (b"1.0", 1.0),
        (b"1E2", 100.0),
        (b"null", None),
    ],
)
def test_answers_whose_numbers_are_exact_keep_their_view(text: bytes, document: Any) -> None:
    view = parse_view(text)
    assert view is not None
    if document is not None:
        assert view.document == document
    value = convert.json_view_value(text, 1 << 20)
    assert value is not None
    assert json_format.MessageToDict(value) == json.loads(text)


def _numbers(document: Any) -> list[Any]:
    if isinstance(document, dict):
        return [n for item in document.values() for n in _numbers(item)]
    if isinstance(document, list):
        return [n for item in document for n in _numbers(item)]
    if isinstance(document, (int, float, Decimal)) and not isinstance(document, bool):
        return [document]
    return []


_scalars = (
    st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.decimals(allow_nan=False, allow_infinity=False, places=25).map(str).map(Decimal)
    | st.text(max_size=5)
    | st.booleans()
    | st.none()
)
_documents = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=12,
)


def _text(document: Any) -> str:
    if isinstance(document, Decimal):
        return str(document)
    if isinstance(document, list):
        return "[" + ",".join(_text(item) for item in document) + "]"
    if isinstance(document, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{_text(v)}" for k, v in document.items()) + "}"
    return json.dumps(document)


@given(_documents)
def test_a_view_never_shows_a_number_the_text_does_not_say(document: Any) -> None:
    """Whenever there is a view, each of its numbers, as any JSON printer renders a double
    (shortest round trip), names exactly the decimal value written in the body."""
    text = _text(document).encode()
    value = convert.json_view_value(text, 1 << 20)
    if value is None:
        return
    written = [Decimal(str(n)) for n in _numbers(json.loads(text, parse_float=Decimal))]
    shown = [Decimal(repr(float(n))) for n in _numbers(json_format.MessageToDict(value))]
    assert sorted(shown) == sorted(written)  # a Struct keeps no key order


def _value(data: Any) -> struct_pb2.Value:
    return json_format.ParseDict(data, struct_pb2.Value())


@pytest.mark.parametrize(
    ("number", "sent"),
    [
        (20.0, b"20"),
        (-(2.0**53), b"-9007199254740992"),
        (2.0**53, b"9007199254740992"),
        (1.5, b"1.5"),
        (0.1, b"0.1"),
        (1e-300, b"1e-300"),
    ],
)
def test_caller_numbers_within_2_53_are_sent_integral_or_shortest(
    number: float, sent: bytes
) -> None:
    assert convert.value_to_json_bytes(_value(number)) == sent


@pytest.mark.parametrize(
    ("document", "where"),
    [
        (9223372036854775807, "json"),  # reaches sagewire as 9223372036854775808.0
        ({"id": 9007199254740995}, "json.id"),  # read by the encoder as 2^53 + 4
        ({"xs": [1, -1e300]}, "json.xs[1]"),
        ({"odd key": 2.0**64}, "json['odd key']"),
    ],
)
def test_caller_numbers_beyond_2_53_are_refused_naming_json(document: Any, where: str) -> None:
    with pytest.raises(SagewireError) as info:
        convert.value_to_json_bytes(_value(document))
    assert info.value.kind is ErrorKind.INVALID_ARGUMENT
    assert [v.field for v in info.value.violations] == ["json"]
    assert info.value.message.startswith(f"json: {where}: ")
    assert "`body`" in info.value.message
    assert str(MAX_EXACT_INT) in info.value.message


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
def test_caller_nan_and_infinity_are_refused(number: float) -> None:
    with pytest.raises(SagewireError) as info:
        convert.value_to_json_bytes(struct_pb2.Value(number_value=number))
    assert [v.field for v in info.value.violations] == ["json"]


def _empty_top() -> struct_pb2.Value:
    return struct_pb2.Value()


def _empty_nested() -> struct_pb2.Value:
    outer = _value({"inputs": [1]})
    outer.struct_value.fields["inputs"].list_value.values.add()  # a kind-less element
    return outer


@pytest.mark.parametrize(
    ("make", "where"), [(_empty_top, "json"), (_empty_nested, "json.inputs[1]")]
)
def test_a_value_with_no_kind_is_refused_not_sent_as_null(make: Any, where: str) -> None:
    with pytest.raises(SagewireError) as info:
        convert.value_to_json_bytes(make())
    assert info.value.kind is ErrorKind.INVALID_ARGUMENT
    assert [v.field for v in info.value.violations] == ["json"]
    assert info.value.message.startswith(f"json: {where}: ")


def test_explicit_null_is_still_sent_as_null() -> None:
    null = struct_pb2.Value(null_value=struct_pb2.NULL_VALUE)
    assert convert.value_to_json_bytes(null) == b"null"


def test_every_request_with_a_json_value_uses_the_same_rule() -> None:
    """Every request message with a google.protobuf.Value field is converted by
    value_to_json_bytes; this pins the list so a new one is not missed."""
    with_json = {
        message.DESCRIPTOR.full_name
        for message in (
            invoke_pb2.InvokeRequest,
            invoke_pb2.InvokeStreamRequest,
            converse_pb2.ConverseTurn,
            async_jobs_pb2.SubmitAsyncRequest,
        )
        if "json" in message.DESCRIPTOR.fields_by_name
    }
    found = set()
    for module in (invoke_pb2, converse_pb2, async_jobs_pb2):
        for message in module.DESCRIPTOR.message_types_by_name.values():
            if message.name.endswith(("Request", "Turn")) and any(
                f.message_type is not None and f.message_type.full_name == "google.protobuf.Value"
                for f in message.fields
            ):
                found.add(message.full_name)
    assert found == with_json
