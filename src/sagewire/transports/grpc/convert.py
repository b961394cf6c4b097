"""Protobuf ↔ domain conversions. Pure functions; no I/O."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Protocol

from google.protobuf import duration_pb2, json_format, struct_pb2

from sagewire.config.settings import RouteMode, StreamFraming
from sagewire.core import json_view
from sagewire.core.errors import invalid_argument
from sagewire.core.json_view import request_number
from sagewire.core.types import EndpointView, InvocationOptions, InvokeResult, RouteInfo
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
    StreamFraming.SSE: common_pb2.FRAMING_SSE,
}


# Most calls set no option: they share one empty InvocationOptions (it is frozen).
NO_OPTIONS = InvocationOptions()
_OPTION_NAMES = tuple(f.name for f in fields(InvocationOptions))


def options_from_proto(options: common_pb2.InvocationOptions) -> InvocationOptions:
    if not options.ListFields():  # proto3 strings: only non-empty ones are listed
        return NO_OPTIONS
    # The proto message and the domain type share field names (unit-tested both ways).
    return InvocationOptions(**{name: getattr(options, name) for name in _OPTION_NAMES})


def options_to_proto(options: InvocationOptions) -> common_pb2.InvocationOptions:
    return common_pb2.InvocationOptions(
        **{name: getattr(options, name) for name in options.set_fields()}
    )


def _to_python(value: struct_pb2.Value, where: str) -> Any:
    """A caller's Value as plain Python, numbers by sagewire.core.json_view's rule (integral
    ones become ints again, so {"max_new_tokens": 20} reaches the model as 20, not 20.0)."""
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        return request_number(value.number_value, where)
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return {
            key: _to_python(item, f"{where}.{key}" if key.isidentifier() else f"{where}[{key!r}]")
            for key, item in value.struct_value.fields.items()
        }
    if kind == "list_value":
        return [_to_python(item, f"{where}[{i}]") for i, item in enumerate(value.list_value.values)]
    if kind == "null_value":
        return None
    # No kind at all: not JSON null but an unset Value (protobufjs makes one from
    # {struct_value: ...}, the field's name instead of its JSON form). Never guess.
    raise invalid_argument(
        "json",
        f"{where}: a google.protobuf.Value with no kind set; set one of null_value, "
        "number_value, string_value, bool_value, struct_value or list_value (in JSON, write "
        "the value itself)",
    )


def value_to_json_bytes(value: struct_pb2.Value) -> bytes:
    """A caller's google.protobuf.Value as compact UTF-8 JSON.

    Raises INVALID_ARGUMENT (field `json`) for a Value with no kind (anywhere in it), NaN or
    Infinity, and numbers beyond ±2^53 (see sagewire.core.json_view)."""
    return json_view.dumps(_to_python(value, "json"))


def json_view_value(body: bytes, limit: int) -> struct_pb2.Value | None:
    """The `json` view of an answer: `body` as a Value when it is at most `limit` bytes of JSON
    whose every number a double holds exactly (sagewire.core.json_view); else None."""
    if len(body) > limit:
        return None
    view = json_view.parse_view(body)
    if view is None:
        return None
    try:
        return json_format.ParseDict(view.document, struct_pb2.Value())
    except (ValueError, json_format.ParseError, RecursionError):  # e.g. a lone surrogate
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


type View = common_pb2.ResponseView.ValueType
FULL: View = common_pb2.RESPONSE_VIEW_FULL
_VIEWS: dict[int, View] = {
    common_pb2.RESPONSE_VIEW_UNSPECIFIED: FULL,
    common_pb2.RESPONSE_VIEW_FULL: FULL,
    common_pb2.RESPONSE_VIEW_BODY: common_pb2.RESPONSE_VIEW_BODY,
    common_pb2.RESPONSE_VIEW_JSON: common_pb2.RESPONSE_VIEW_JSON,
}


def response_view(value: int) -> View:
    """A request's `view` (unspecified means FULL); INVALID_ARGUMENT, field `view`, if unknown."""
    view = _VIEWS.get(value)
    if view is None:
        raise invalid_argument(
            "view",
            f"unknown value {value}; use RESPONSE_VIEW_FULL, RESPONSE_VIEW_BODY or "
            "RESPONSE_VIEW_JSON",
        )
    return view


class Answer(Protocol):
    """A response message carrying an answer as `body` and its `json` view."""

    body: bytes

    @property
    def json(self) -> struct_pb2.Value: ...


def set_answer(message: Answer, body: bytes, is_json: bool, view: View, limit: int) -> None:
    """`body` into `message` as `view` asks. The `json` view is built only when `is_json` (a
    JSON content type, or a record under lines/sse framing) and the view is wanted, and is set
    only when sagewire.core.json_view allows it; RESPONSE_VIEW_JSON then leaves `body` empty."""
    if view == common_pb2.RESPONSE_VIEW_BODY or not is_json:
        message.body = body
        return
    value = json_view_value(body, limit)
    if value is None:
        message.body = body
        return
    message.json.CopyFrom(value)
    if view != common_pb2.RESPONSE_VIEW_JSON:
        message.body = body


def invoke_response(
    result: InvokeResult,
    want_json: bool,
    json_limit: int = DEFAULT_JSON_VIEW_BYTES,
    view: View = FULL,
) -> invoke_pb2.InvokeResponse:
    # Field by field, the empty ones (most of them, on most answers) skipped: half the cost
    # of the keyword constructor, which sets every field it is given.
    response = invoke_pb2.InvokeResponse()
    if result.content_type:
        response.content_type = result.content_type
    if result.invoked_variant:
        response.invoked_production_variant = result.invoked_variant
    if result.custom_attributes:
        response.custom_attributes = result.custom_attributes
    if result.new_session_id:
        response.new_session_id = result.new_session_id
    if result.closed_session_id:
        response.closed_session_id = result.closed_session_id
    if result.endpoint:
        response.endpoint_name = result.endpoint
    set_answer(response, result.body, want_json, view, json_limit)
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
        default_custom_attributes=info.default_custom_attributes,
        endpoints=[_route_endpoint(e) for e in info.endpoints],
        admission=model_service_pb2.RouteAdmission(
            max_concurrency=info.max_concurrency,
            concurrency_limit=info.concurrency_limit,
            in_flight=info.in_flight,
            adaptive=info.adaptive,
        ),
    )


_CIRCUITS = {
    "closed": model_service_pb2.CIRCUIT_STATE_CLOSED,
    "open": model_service_pb2.CIRCUIT_STATE_OPEN,
    "half_open": model_service_pb2.CIRCUIT_STATE_HALF_OPEN,
}


def _route_endpoint(view: EndpointView) -> model_service_pb2.RouteEndpoint:
    half_open_in = duration_pb2.Duration()
    half_open_in.FromNanoseconds(int(view.half_open_in_s * 1e9))
    return model_service_pb2.RouteEndpoint(
        endpoint_name=view.endpoint,
        target_variant=view.target_variant,
        fallback=view.fallback,
        circuit_state=_CIRCUITS[view.circuit_state],
        consecutive_failures=view.consecutive_failures,
        half_open_in=half_open_in,
    )
