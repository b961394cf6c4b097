"""Protobuf ↔ domain conversions. Pure functions; no I/O."""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

from google.protobuf import duration_pb2, json_format, struct_pb2

from sagewire.config.settings import RouteMode, StreamFraming
from sagewire.core.errors import invalid_argument
from sagewire.core.types import InvocationOptions, InvokeResult, RouteInfo
from sagewire.v1 import common_pb2, invoke_pb2, model_service_pb2

JSON_CONTENT_TYPE = "application/json"

_MODES = {
    RouteMode.REALTIME: model_service_pb2.ROUTE_MODE_REALTIME,
    RouteMode.STREAM: model_service_pb2.ROUTE_MODE_STREAM,
    RouteMode.ASYNC: model_service_pb2.ROUTE_MODE_ASYNC,
    RouteMode.BIDI: model_service_pb2.ROUTE_MODE_BIDI,
}
_FRAMINGS = {
    StreamFraming.RAW: common_pb2.FRAMING_RAW,
    StreamFraming.LINES: common_pb2.FRAMING_LINES,
}


def options_from_proto(options: common_pb2.InvocationOptions) -> InvocationOptions:
    # The proto message and the domain type share field names (unit-tested both ways).
    return InvocationOptions(
        **{f.name: getattr(options, f.name) for f in fields(InvocationOptions)}
    )


def options_to_proto(options: InvocationOptions) -> common_pb2.InvocationOptions:
    return common_pb2.InvocationOptions(
        **{name: getattr(options, name) for name in options.set_fields()}
    )


# Integers beyond this are not exact in a double, so they stay floats.
_MAX_EXACT_INT = 2**53


def _to_python(value: struct_pb2.Value) -> Any:
    """A Value as plain Python. Value stores every number as a double; integral ones become
    ints again so {"max_new_tokens": 20} reaches the model as 20, not 20.0."""
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        number = value.number_value
        if number.is_integer() and abs(number) < _MAX_EXACT_INT:
            return int(number)
        return number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return {key: _to_python(item) for key, item in value.struct_value.fields.items()}
    if kind == "list_value":
        return [_to_python(item) for item in value.list_value.values]
    return None


def value_to_json_bytes(value: struct_pb2.Value) -> bytes:
    """A google.protobuf.Value as compact UTF-8 JSON."""
    try:
        return json.dumps(
            _to_python(value), separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode()
    except ValueError:
        raise invalid_argument("json", "NaN and Infinity are not valid JSON numbers") from None


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def json_bytes_to_value(data: bytes) -> struct_pb2.Value | None:
    """Parse JSON into a Value, or None when it is not valid JSON."""
    try:
        return json_format.ParseDict(
            json.loads(data, parse_constant=_no_constants), struct_pb2.Value()
        )
    except (ValueError, json_format.ParseError, RecursionError):
        return None


def payload(
    message: invoke_pb2.InvokeRequest | invoke_pb2.InvokeStreamRequest,
) -> tuple[bytes, str]:
    """The request body and its content type ("" = route default)."""
    kind = message.WhichOneof("payload")
    if kind == "json":
        return value_to_json_bytes(message.json), message.content_type or JSON_CONTENT_TYPE
    if kind == "body":
        return message.body, message.content_type
    raise invalid_argument("payload", "set either `body` (bytes) or `json` (a JSON value)")


def framing_from_proto(value: int) -> StreamFraming | None:
    if value == common_pb2.FRAMING_UNSPECIFIED:
        return None
    for framing, number in _FRAMINGS.items():
        if number == value:
            return framing
    raise invalid_argument("framing", f"unknown value {value}")


# Bodies larger than this get no parsed `json` view: the view can be several times the size
# of the JSON text and would push a valid answer past the gRPC message limit.
DEFAULT_JSON_VIEW_BYTES = 1024 * 1024


def invoke_response(
    result: InvokeResult, want_json: bool, json_limit: int = DEFAULT_JSON_VIEW_BYTES
) -> invoke_pb2.InvokeResponse:
    response = invoke_pb2.InvokeResponse(
        body=result.body,
        content_type=result.content_type,
        invoked_production_variant=result.invoked_variant,
        custom_attributes=result.custom_attributes,
        new_session_id=result.new_session_id,
        closed_session_id=result.closed_session_id,
    )
    if want_json and len(result.body) <= json_limit:
        value = json_bytes_to_value(result.body)
        if value is not None:
            response.json.CopyFrom(value)
    return response


def model_to_proto(info: RouteInfo, endpoint_status: str = "Unknown") -> model_service_pb2.Model:
    timeout = duration_pb2.Duration()
    timeout.FromNanoseconds(int(info.timeout_s * 1e9))
    return model_service_pb2.Model(
        name=info.name,
        mode=_MODES[info.mode],
        endpoint_name=info.endpoint,
        content_type=info.content_type,
        accept=info.accept,
        defaults=options_to_proto(info.defaults),
        allowed_options=list(info.allowed_options),
        timeout=timeout,
        framing=_FRAMINGS[info.framing],
        endpoint_status=endpoint_status,
        description=info.description,
    )
