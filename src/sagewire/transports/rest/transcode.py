"""HTTP request ↔ protobuf message, by the proto3 JSON mapping (google.protobuf.json_format).

In: the JSON body per the binding's `body` ("*" = the whole message, a field name = that
field), then the path variables, then query parameters for the remaining fields (both the
lowerCamelCase JSON name and the proto name are accepted, as Envoy's transcoder does).
Out: lowerCamelCase names, default values omitted, int64 as strings, bytes as base64.
Every failure is an INVALID_ARGUMENT naming the field or the JSON problem.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from sagewire.transports.rest import errors
from sagewire.transports.rest.routes import Binding

# Message-typed fields a query parameter may still set: they have a JSON string form.
_STRING_FORM_TYPES = {
    "google.protobuf.Timestamp",
    "google.protobuf.Duration",
    "google.protobuf.FieldMask",
    "google.protobuf.StringValue",
    "google.protobuf.BytesValue",
    "google.protobuf.Int32Value",
    "google.protobuf.UInt32Value",
    "google.protobuf.Int64Value",
    "google.protobuf.UInt64Value",
    "google.protobuf.FloatValue",
    "google.protobuf.DoubleValue",
    "google.protobuf.BoolValue",
    "google.protobuf.Value",
}


def new_message(descriptor: Descriptor) -> Message:
    return message_factory.GetMessageClass(descriptor)()


def _field(descriptor: Any, name: str) -> FieldDescriptor | None:
    found: FieldDescriptor | None = descriptor.fields_by_name.get(name)
    if found is None:
        found = next((f for f in descriptor.fields if f.json_name == name), None)
    return found


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(pairs)
    if len(data) != len(pairs):
        keys = [key for key, _ in pairs]
        twice = next(key for key in keys if keys.count(key) > 1)
        raise errors.malformed_json(f"key {twice!r} appears twice in one object")
    return data


def parse_json(body: bytes) -> Any:
    """A JSON request body or frame as Python data; MALFORMED_JSON naming the problem."""
    try:
        # Decoded first: json.loads would guess UTF-16/32 from the bytes; JSON on HTTP is UTF-8.
        # A repeated key is an error (protobuf's JSON parser says so too), not "last one wins".
        return json.loads(body.decode(), object_pairs_hook=_unique_keys)
    except UnicodeDecodeError:
        raise errors.malformed_json("it is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise errors.malformed_json(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise errors.malformed_json("it is nested too deeply") from None


def _merge(data: Any, message: Message, where: str) -> None:
    try:
        json_format.ParseDict(data, message)
    except json_format.ParseError as exc:
        # json_format's first line names the field and the problem; the second lists every
        # field of the message, which the first already makes actionable.
        raise errors.bad_field(where, str(exc).split("\n")[0]) from None
    except RecursionError:
        raise errors.malformed_json("it is nested too deeply") from None
    except OverflowError:  # json_format's float() of an integer beyond a double's range
        raise errors.bad_field(
            where, "a number is too large for a double (send exact large numbers in `body`)"
        ) from None


def _set_path(message: Message, field_path: str, values: list[str], source: str) -> None:
    """Set `field_path` (dotted, proto or JSON names) from text values of the URL."""
    *parents, leaf_name = field_path.split(".")
    target = message
    for name in parents:
        parent = _field(target.DESCRIPTOR, name)
        if parent is None or parent.message_type is None or _is_repeated(parent):
            raise errors.bad_field(field_path, f"{source} {field_path!r} names no message field")
        target = getattr(target, parent.name)
    leaf = _field(target.DESCRIPTOR, leaf_name)
    if leaf is None:
        raise errors.bad_field(
            field_path, f"{source} {field_path!r}: {target.DESCRIPTOR.name} has no such field"
        )
    if leaf.message_type is not None and leaf.message_type.full_name not in _STRING_FORM_TYPES:
        raise errors.bad_field(
            field_path, f"{source} {field_path!r} is a message; send it in the JSON body"
        )
    if not _is_repeated(leaf) and len(values) > 1:
        raise errors.bad_field(field_path, f"{source} {field_path!r} is given more than once")
    converted = [_scalar(leaf, text, field_path) for text in values]
    _merge({leaf.name: converted if _is_repeated(leaf) else converted[0]}, target, field_path)


def _is_repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def _scalar(field: FieldDescriptor, text: str, field_path: str) -> Any:
    # JSON text forms json_format accepts as-is, except bool which wants a JSON boolean.
    if field.type == FieldDescriptor.TYPE_BOOL:
        if text not in ("true", "false"):
            raise errors.bad_field(field_path, f"{field_path!r} must be true or false")
        return text == "true"
    return text


def _canonical(descriptor: Any, field_path: str) -> str:
    """`field_path` with each known segment under its proto name (JSON names accepted)."""
    names = []
    for name in field_path.split("."):
        field = _field(descriptor, name) if descriptor is not None else None
        names.append(field.name if field is not None else name)
        descriptor = field.message_type if field is not None else None
    return ".".join(names)


def _check_collision(message: Message, field_path: str, value: str) -> None:
    """A body field the path also binds must agree with the path (Envoy's
    reject_binding_body_field_collisions); the same value twice is fine."""
    target: Any = message
    for name in field_path.split("."):
        field = _field(target.DESCRIPTOR, name)
        if field is None:
            return  # _set_path names the problem
        if field.message_type is None:
            current = getattr(target, field.name)
            if current not in ("", 0, False) and str(current) != value:
                raise errors.bad_field(
                    field_path,
                    f"the path sets {field_path!r} to {value!r} but the body says {current!r}; "
                    "leave it out of the body",
                )
            return
        target = getattr(target, field.name)


def request_message(
    binding: Binding,
    variables: dict[str, str],
    query: Iterable[tuple[str, str]],
    body: bytes,
) -> Message:
    """The RPC's request message from the HTTP request."""
    message = new_message(binding.method.input_type)
    if binding.body and body.strip():
        data = parse_json(body)
        if binding.body == "*":
            if not isinstance(data, dict):
                raise errors.malformed_json(
                    f"expected a JSON object ({binding.method.input_type.name})"
                )
            _merge(data, message, "body")
        else:
            _merge({binding.body: data}, message, binding.body)
    for field_path, value in variables.items():
        _check_collision(message, field_path, value)
        _set_path(message, field_path, [value], "path variable")
    grouped: dict[str, list[str]] = {}
    for key, value in query:
        # By field, not spelling: ?allowed_options=a&allowedOptions=b is one repeated field.
        grouped.setdefault(_canonical(message.DESCRIPTOR, key), []).append(value)
    for key, values in grouped.items():
        if key in variables:
            raise errors.bad_field(key, f"query parameter {key!r} is already set by the path")
        _set_path(message, key, values, "query parameter")
    return message


def parse_message(data: bytes, message: Message) -> Message:
    """`message` merged from a JSON object in `data` (a WebSocket frame, say): the same checks
    as a request body (UTF-8, no repeated keys, known fields, right types)."""
    parsed = parse_json(data)
    if not isinstance(parsed, dict):
        raise errors.malformed_json(f"expected a JSON object ({message.DESCRIPTOR.name})")
    _merge(parsed, message, "body")
    return message


# Integers beyond this are not exact in a double, so they stay floats.
_MAX_EXACT_INT = 2**53


def _integral(data: Any) -> Any:
    """Whole doubles as integers: json_format gives 20.0 where protobuf's C++ printer (Envoy)
    and the JSON the model sent say 20."""
    if isinstance(data, float):
        return int(data) if data.is_integer() and abs(data) < _MAX_EXACT_INT else data
    if isinstance(data, dict):
        return {key: _integral(value) for key, value in data.items()}
    if isinstance(data, list):
        return [_integral(value) for value in data]
    return data


def to_json(message: Message) -> dict[str, Any]:
    """A message in the proto3 JSON mapping, as Python data."""
    data: dict[str, Any] = _integral(json_format.MessageToDict(message))
    return data


def response_bytes(binding: Binding, message: Message) -> bytes:
    """The HTTP body of a response message (or of its `response_body` field)."""
    data: Any = to_json(message)
    if binding.response_body:
        field = message.DESCRIPTOR.fields_by_name[binding.response_body]
        data = data.get(field.json_name, {} if field.message_type is not None else None)
    return dumps(data)


def dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
