"""Protobuf ↔ domain conversions (sagewire.transports.grpc.convert) and content types."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from google.protobuf import json_format, struct_pb2

from sagewire.config.settings import RouteMode, ServerSettings, StreamFraming
from sagewire.core.content import is_json
from sagewire.core.errors import ErrorKind, SagewireError
from sagewire.core.types import InvocationOptions, InvokeResult, RouteInfo
from sagewire.transports.grpc import convert
from sagewire.v1 import common_pb2, invoke_pb2, model_service_pb2


def value(data: Any) -> struct_pb2.Value:
    return json_format.ParseDict(data, struct_pb2.Value())


@pytest.mark.parametrize("request_type", [invoke_pb2.InvokeRequest, invoke_pb2.InvokeStreamRequest])
def test_json_payload_is_compact_utf8_json_with_json_content_type(
    request_type: type[invoke_pb2.InvokeRequest] | type[invoke_pb2.InvokeStreamRequest],
) -> None:
    request = request_type(model="m", json=value({"text": "héllo", "tags": [True, None, "a b"]}))
    body, content_type = convert.payload(request)
    # Struct keys have no stable order, so compare the parsed value and the bytes separately.
    assert json.loads(body) == {"text": "héllo", "tags": [True, None, "a b"]}
    assert b'"text":"h\xc3\xa9llo"' in body
    assert b'"tags":[true,null,"a b"]' in body
    assert b", " not in body
    assert content_type == "application/json"


def test_json_payload_keeps_an_explicit_content_type() -> None:
    request = invoke_pb2.InvokeRequest(json=value([1.5]), content_type="application/jsonlines")
    assert convert.payload(request) == (b"[1.5]", "application/jsonlines")


def test_json_payload_keeps_integers_integral() -> None:
    request = invoke_pb2.InvokeRequest(json=value({"max_new_tokens": 20}))
    assert convert.payload(request)[0] == b'{"max_new_tokens":20}'


def test_body_payload_is_passed_as_is_with_caller_content_type() -> None:
    request = invoke_pb2.InvokeRequest(body=b"\x00\x01csv,data", content_type="text/csv")
    assert convert.payload(request) == (b"\x00\x01csv,data", "text/csv")


def test_body_payload_without_content_type_leaves_the_route_default() -> None:
    assert convert.payload(invoke_pb2.InvokeRequest(body=b"x")) == (b"x", "")


def test_empty_body_is_still_a_payload() -> None:
    assert convert.payload(invoke_pb2.InvokeRequest(body=b"")) == (b"", "")


def test_missing_payload_is_invalid_argument_naming_payload() -> None:
    with pytest.raises(SagewireError) as info:
        convert.payload(invoke_pb2.InvokeRequest(model="m"))
    assert info.value.kind is ErrorKind.INVALID_ARGUMENT
    assert [v.field for v in info.value.violations] == ["payload"]
    assert "`body`" in info.value.message
    assert "`json`" in info.value.message


@pytest.mark.parametrize(
    "data",
    [{"a": [1, 2, {"b": None}]}, [], "text", 3.25, True, None],
)
def test_json_view_value_parses_valid_json(data: object) -> None:
    parsed = convert.json_view_value(json.dumps(data).encode(), 1 << 20)
    assert parsed is not None
    assert json_format.MessageToDict(parsed) == data


@pytest.mark.parametrize("data", [b"", b"{", b"{'a': 1}", b"\xff\xfe", b"not json", b"[1,]"])
def test_json_view_value_rejects_invalid_json(data: bytes) -> None:
    assert convert.json_view_value(data, 1 << 20) is None


def test_json_view_value_accepts_moderate_nesting() -> None:
    nested = b"[" * 20 + b"1" + b"]" * 20
    assert convert.json_view_value(nested, 1 << 20) is not None


@pytest.mark.parametrize("depth", [200, 100_000])
def test_json_view_value_gives_up_on_deep_nesting(depth: int) -> None:
    assert convert.json_view_value(b"[" * depth + b"]" * depth, 1 << 20) is None


def test_value_to_json_bytes_keeps_non_ascii_as_utf8() -> None:
    assert convert.value_to_json_bytes(value({"k": "日本"})) == '{"k":"日本"}'.encode()


RESULT = InvokeResult(
    body=b'{"answer": 42}',
    content_type="application/json",
    invoked_variant="AllTraffic",
    custom_attributes="trace=1",
    new_session_id="s-1; Expires=2030-01-01T00:00:00Z",
    closed_session_id="s-0",
)


def test_invoke_response_copies_every_field() -> None:
    response = convert.invoke_response(RESULT, want_json=False)
    assert response.body == RESULT.body
    assert response.content_type == "application/json"
    assert response.invoked_production_variant == "AllTraffic"
    assert response.custom_attributes == "trace=1"
    assert response.new_session_id == RESULT.new_session_id
    assert response.closed_session_id == "s-0"
    assert not response.HasField("json")


def test_invoke_response_sets_json_when_asked_and_valid() -> None:
    response = convert.invoke_response(RESULT, want_json=True)
    assert response.HasField("json")
    assert json_format.MessageToDict(response.json) == {"answer": 42}
    assert response.body == RESULT.body  # the raw body is always there


def test_invoke_response_leaves_json_unset_for_invalid_json() -> None:
    result = InvokeResult(body=b"{oops", content_type="application/json")
    response = convert.invoke_response(result, want_json=True)
    assert not response.HasField("json")
    assert response.body == b"{oops"


def test_large_json_answer_fits_the_default_message_limit() -> None:
    body = json.dumps({"text": "x" * 4_500_000}).encode()  # 4.5 MB < 6 MiB
    result = InvokeResult(body=body, content_type="application/json")
    response = convert.invoke_response(result, want_json=is_json(result.content_type))
    assert response.ByteSize() <= ServerSettings().max_message_bytes


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        (common_pb2.FRAMING_UNSPECIFIED, None),
        (common_pb2.FRAMING_RAW, StreamFraming.RAW),
        (common_pb2.FRAMING_LINES, StreamFraming.LINES),
    ],
)
def test_framing_from_proto(number: int, expected: StreamFraming | None) -> None:
    assert convert.framing_from_proto(number) is expected


def test_unknown_framing_number_is_invalid_argument() -> None:
    with pytest.raises(SagewireError) as info:
        convert.framing_from_proto(7)
    assert info.value.kind is ErrorKind.INVALID_ARGUMENT
    assert info.value.message == "framing: unknown value 7"


ALL_OPTIONS = InvocationOptions(
    custom_attributes="c",
    target_variant="v",
    target_model="m.tar.gz",
    inference_component="ic",
    target_container_hostname="h",
    inference_id="i",
    session_id="s",
    enable_explanations="`true`",
)


@pytest.mark.parametrize(
    "options", [ALL_OPTIONS, InvocationOptions(), InvocationOptions(session_id="x")]
)
def test_options_round_trip(options: InvocationOptions) -> None:
    assert convert.options_from_proto(convert.options_to_proto(options)) == options


INFO = RouteInfo(
    name="chat",
    mode=RouteMode.STREAM,
    endpoint="chat-endpoint",
    description="A chat model.",
    content_type="application/json",
    accept="application/jsonlines",
    framing=StreamFraming.LINES,
    timeout_s=2.5,
    allowed_options=("framing", "inference_id"),
    defaults=InvocationOptions(target_variant="B"),
)


def test_model_to_proto_carries_every_field() -> None:
    model = model_service_pb2.Model.FromString(
        convert.model_to_proto(INFO, endpoint_status="InService").SerializeToString()
    )
    assert model.name == "chat"
    assert model.mode == model_service_pb2.ROUTE_MODE_STREAM
    assert model.endpoint_name == "chat-endpoint"
    assert model.description == "A chat model."
    assert model.content_type == "application/json"
    assert model.accept == "application/jsonlines"
    assert model.framing == common_pb2.FRAMING_LINES
    assert (model.timeout.seconds, model.timeout.nanos) == (2, 500_000_000)
    assert list(model.allowed_options) == ["framing", "inference_id"]
    assert convert.options_from_proto(model.defaults) == INFO.defaults
    assert model.endpoint_status == "InService"


@pytest.mark.parametrize(
    ("mode", "number"),
    [
        (RouteMode.REALTIME, model_service_pb2.ROUTE_MODE_REALTIME),
        (RouteMode.STREAM, model_service_pb2.ROUTE_MODE_STREAM),
        (RouteMode.ASYNC, model_service_pb2.ROUTE_MODE_ASYNC),
        (RouteMode.BIDI, model_service_pb2.ROUTE_MODE_BIDI),
    ],
)
def test_model_to_proto_maps_every_mode(mode: RouteMode, number: int) -> None:
    assert convert.model_to_proto(replace(INFO, mode=mode)).mode == number


def test_model_status_defaults_to_unknown() -> None:
    assert convert.model_to_proto(INFO).endpoint_status == "Unknown"


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("Application/JSON", True),
        (" application/json ", True),
        ("application/vnd.api+json", True),
        ("application/problem+json; charset=utf-8", True),
        ("application/jsonlines", True),
        ("application/jsonl", True),
        ("application/x-ndjson", True),
        ("text/csv", False),
        ("text/plain", False),
        ("application/octet-stream", False),
        ("application/jsonx", False),
        ("", False),
    ],
)
def test_is_json(content_type: str, expected: bool) -> None:
    assert is_json(content_type) is expected
