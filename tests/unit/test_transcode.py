"""HTTP request → message and message → JSON, by http.proto's rules for body, path and query.

The served protos use only `body: "*"` and path variables; the other rules (a body field, query
parameters of every kind, `response_body`) are pinned here on bindings made from real
descriptors.
"""

from __future__ import annotations

import json
from typing import Any, cast

import pytest
from google.protobuf.descriptor import MethodDescriptor

from sagewire.core.errors import SagewireError
from sagewire.transports.rest.http_rule import parse_template
from sagewire.transports.rest.routes import Binding
from sagewire.transports.rest.transcode import parse_message, request_message, response_bytes
from sagewire.v1 import async_jobs_pb2, invoke_pb2, model_service_pb2


class _Method:
    """Just what transcoding reads of a MethodDescriptor."""

    def __init__(self, input_type: Any, output_type: Any = None) -> None:
        self.input_type = input_type
        self.output_type = output_type
        self.name = "Test"


def _binding(input_type: Any, body: str = "", response_body: str = "") -> Binding:
    method = cast("MethodDescriptor", _Method(input_type))
    return Binding("POST", parse_template("/v1/{model}"), body, response_body, method)


def test_body_field_takes_the_whole_body_and_query_the_rest() -> None:
    binding = _binding(invoke_pb2.InvokeRequest.DESCRIPTOR, body="options")
    message = request_message(
        binding,
        {"model": "m"},
        [("accept", "text/plain"), ("content_type", "a/b")],
        json.dumps({"customAttributes": "x", "target_variant": "B"}).encode(),
    )
    assert isinstance(message, invoke_pb2.InvokeRequest)
    assert (message.model, message.accept, message.content_type) == ("m", "text/plain", "a/b")
    assert (message.options.custom_attributes, message.options.target_variant) == ("x", "B")


def test_nested_query_parameters_by_either_name() -> None:
    binding = _binding(invoke_pb2.InvokeRequest.DESCRIPTOR)
    message = request_message(
        binding,
        {},
        [("options.customAttributes", "x"), ("options.target_variant", "B"), ("body", "eA==")],
        b"",
    )
    assert isinstance(message, invoke_pb2.InvokeRequest)
    assert (message.options.custom_attributes, message.options.target_variant) == ("x", "B")
    assert message.body == b"x"  # bytes as base64


def test_repeated_enum_and_bool_query_parameters() -> None:
    binding = _binding(model_service_pb2.Model.DESCRIPTOR)
    message = request_message(
        binding,
        {},
        [("allowed_options", "a"), ("allowedOptions", "b"), ("mode", "ROUTE_MODE_STREAM")],
        b"",
    )
    assert isinstance(message, model_service_pb2.Model)
    assert list(message.allowed_options) == ["a", "b"]
    assert message.mode == model_service_pb2.ROUTE_MODE_STREAM
    flag = _binding(async_jobs_pb2.GetAsyncResultResponse.DESCRIPTOR)
    answer = request_message(flag, {}, [("output_not_inlined", "true"), ("output_size", "7")], b"")
    assert isinstance(answer, async_jobs_pb2.GetAsyncResultResponse)
    assert (answer.output_not_inlined, answer.output_size) == (True, 7)


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ([("colour", "red")], "has no such field"),
        ([("defaults", "x")], "is a message"),
        ([("name", "a"), ("name", "b")], "more than once"),
        ([("mode", "NO_SUCH_MODE")], "mode"),
        ([("name.inner", "x")], "names no message field"),
    ],
)
def test_bad_query_parameters_name_the_problem(query: list[tuple[str, str]], needle: str) -> None:
    with pytest.raises(SagewireError) as caught:
        request_message(_binding(model_service_pb2.Model.DESCRIPTOR), {}, query, b"")
    assert caught.value.reason == "INVALID_JSON_FIELD"
    assert needle in caught.value.message


def test_bool_query_parameter_takes_true_or_false_only() -> None:
    binding = _binding(async_jobs_pb2.GetAsyncResultResponse.DESCRIPTOR)
    with pytest.raises(SagewireError, match="true or false"):
        request_message(binding, {}, [("output_not_inlined", "yes")], b"")


def test_response_body_selects_one_field() -> None:
    response = model_service_pb2.GetModelResponse(model=model_service_pb2.Model(name="echo"))
    whole = _binding(model_service_pb2.GetModelRequest.DESCRIPTOR)
    assert json.loads(response_bytes(whole, response)) == {"model": {"name": "echo"}}
    picked = _binding(model_service_pb2.GetModelRequest.DESCRIPTOR, response_body="model")
    assert json.loads(response_bytes(picked, response)) == {"name": "echo"}


def test_whole_numbers_stay_integers_in_json_values() -> None:
    binding = _binding(invoke_pb2.InvokeRequest.DESCRIPTOR, body="*")
    message = request_message(binding, {}, [], b'{"json": {"n": 20, "x": 1.5, "big": 1e300}}')
    out = json.loads(response_bytes(binding, message))
    assert out["json"] == {"n": 20, "x": 1.5, "big": 1e300}
    assert '"n":20' in response_bytes(binding, message).decode()


@pytest.mark.parametrize("place", ["list", "object"])
def test_a_number_beyond_a_double_is_invalid_argument_not_internal(place: str) -> None:
    """json_format raises OverflowError (not ParseError) turning such an integer into a double:
    every JSON a caller sends passes the one merge that maps it (bodies, WebSocket frames)."""
    huge = "1" + "0" * 400
    body = f'{{"json": [{huge}]}}' if place == "list" else f'{{"json": {{"a": {huge}}}}}'
    binding = _binding(invoke_pb2.InvokeRequest.DESCRIPTOR, body="*")
    with pytest.raises(SagewireError) as caught:
        request_message(binding, {}, [], body.encode())
    assert caught.value.reason == "INVALID_JSON_FIELD"
    assert "too large" in caught.value.message
    with pytest.raises(SagewireError) as frame:
        parse_message(body.encode(), invoke_pb2.InvokeRequest())
    assert frame.value.reason == "INVALID_JSON_FIELD"
