"""`POST /v1/models/{model}:invoke` without the detour through google.protobuf.Value.

The generic transcoder (transports.rest.transcode) is right for every binding but slow for the
hot one: a request's `{"json": X}` becomes a Value by protobuf's pure-Python json_format, which
the servicer then walks back into JSON bytes; an answer's `json` view goes body → Python →
Value → Python again. Here the same conversions are made on plain Python data:

- In: `request_message` gives the InvokeRequest whose payload the servicer sends exactly as
  the generic one's (same bytes but for object key order, which the generic path scrambles through
  protobuf's map and this one keeps; same content type, model, accept). `X` travels as `body`
  with its content type, which is what the servicer makes of `json` (convert.payload). Anything
  outside the plain subset (query parameters, other fields, a number a double would change or
  refuse, nesting near json_format's depth limit, text protobuf would refuse) returns None, and
  the caller takes the generic path, which gives the answer or the error: errors exist once.
- Out: `answer_bytes` gives the JSON the generic path gives for the InvokeResponse the servicer
  would build (convert.invoke_response), again but for key order inside `json`.

tests/unit/test_invoke_json.py checks both against the generic path on generated documents.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping
from typing import Any

from sagewire.core.content import is_json
from sagewire.core.json_view import MAX_EXACT_INT, parse_view
from sagewire.core.types import InvokeResult
from sagewire.transports.grpc import convert
from sagewire.transports.grpc.convert import JSON_CONTENT_TYPE
from sagewire.transports.grpc.inference import InferenceServicer
from sagewire.transports.rest import transcode
from sagewire.transports.rest.context import RestContext
from sagewire.transports.rest.routes import Binding
from sagewire.v1 import common_pb2, invoke_pb2

# json_format refuses Values nested 50 deep (its recursion limit of 100 counts a Value and its
# Struct or ListValue each); far below that the generic path never fails for depth.
MAX_DEPTH = 32
_FIELDS = {"json", "contentType", "content_type", "accept", "view"}
# `view` by name (json_format also takes numbers; those go the generic way).
_VIEWS = dict(common_pb2.ResponseView.items())


class _Unplain(Exception):
    """The document leaves the subset this module converts exactly."""


def _request_value(data: Any, depth: int) -> Any:
    """`data` as convert.value_to_json_bytes would send it after json_format made it a Value:
    every number a double, integral ones within ±2^53 back to integers."""
    if isinstance(data, str) or data is None or data is True or data is False:
        return data
    if isinstance(data, int | float):
        if isinstance(data, int) and abs(data) > MAX_EXACT_INT:
            raise _Unplain  # (float() of a 400-digit integer would overflow)
        number = float(data)
        if not math.isfinite(number) or abs(number) > MAX_EXACT_INT:
            raise _Unplain
        return int(number) if number.is_integer() else number
    if depth >= MAX_DEPTH:
        raise _Unplain
    if isinstance(data, dict):
        return {key: _request_value(value, depth + 1) for key, value in data.items()}
    if isinstance(data, list):
        return [_request_value(value, depth + 1) for value in data]
    raise _Unplain


def request_message(
    variables: Mapping[str, str], query: Mapping[str, str], body: bytes
) -> invoke_pb2.InvokeRequest | None:
    """The InvokeRequest of a plain `:invoke` request, or None for the generic path."""
    if query or not body.strip():
        return None
    data = transcode.parse_json(body)  # the generic path's parser: its errors, UTF-8 rules
    if not isinstance(data, dict) or not data.keys() <= _FIELDS or "json" not in data:
        return None
    content_type = data.get("contentType", data.get("content_type", ""))
    accept = data.get("accept", "")
    if not isinstance(content_type, str) or not isinstance(accept, str):
        return None
    if "contentType" in data and "content_type" in data:
        return None
    named = data.get("view", "RESPONSE_VIEW_UNSPECIFIED")
    view = _VIEWS.get(named) if isinstance(named, str) else None
    if view is None:
        return None
    try:
        payload = json.dumps(
            _request_value(data["json"], 0), separators=(",", ":"), ensure_ascii=False
        ).encode()
    except (_Unplain, UnicodeEncodeError):  # UnicodeEncodeError: a lone surrogate
        return None
    return invoke_pb2.InvokeRequest(
        model=variables["model"],
        body=payload,
        content_type=content_type or JSON_CONTENT_TYPE,
        accept=accept,
        view=view,
    )


def _view_value(data: Any, depth: int) -> Any:
    """A parsed answer as json_format.MessageToDict gives it back from a Value, after
    transcode's whole-doubles-as-integers rule."""
    if isinstance(data, str) or data is None or data is True or data is False:
        return data
    if isinstance(data, int | float):
        number = float(data)
        return int(number) if number.is_integer() and abs(number) < MAX_EXACT_INT else number
    if depth >= MAX_DEPTH:
        raise _Unplain
    if isinstance(data, dict):
        return {key: _view_value(value, depth + 1) for key, value in data.items()}
    return [_view_value(value, depth + 1) for value in data]


# InvokeResponse's string fields after `json`, in field-number order as MessageToDict lists
# them, with the InvokeResult attribute each comes from (tests/unit/test_invoke_json.py checks
# this covers every field of the message, so a field added to the proto cannot be left out).
RESULT_FIELDS = (
    ("invokedProductionVariant", "invoked_variant"),
    ("customAttributes", "custom_attributes"),
    ("newSessionId", "new_session_id"),
    ("closedSessionId", "closed_session_id"),
    ("endpointName", "endpoint"),
)


def answer_bytes(
    result: InvokeResult, json_limit: int, view: convert.View = convert.FULL
) -> bytes | None:
    """The HTTP body the generic path gives for Invoke's answer to `result` in `view`
    (convert.set_answer's rules), or None when it must make it (a json view nested near
    json_format's limit, or text protobuf would refuse)."""
    has_view = False
    parsed: Any = None
    wanted = view != common_pb2.RESPONSE_VIEW_BODY and is_json(result.content_type)
    if wanted and len(result.body) <= json_limit:
        found = parse_view(result.body)
        if found is not None:
            try:
                parsed = _view_value(found.document, 0)
            except _Unplain:
                return None
            has_view = True
    data: dict[str, Any] = {}
    if result.body and not (has_view and view == common_pb2.RESPONSE_VIEW_JSON):
        data["body"] = base64.b64encode(result.body).decode()
    if result.content_type:
        data["contentType"] = result.content_type
    if has_view:
        data["json"] = parsed
    for name, attribute in RESULT_FIELDS:
        value = getattr(result, attribute)
        if value:
            data[name] = value
    try:
        return transcode.dumps(data)
    except UnicodeEncodeError:  # a lone surrogate: protobuf would have refused the view
        return None


INVOKE = "sagewire.v1.InferenceService.Invoke"


class FastInvoke:
    """The fast path around InferenceServicer's own Invoke call (validation, limits, errors:
    the servicer's and the core's), for the binding `serves` accepts."""

    def __init__(self, servicer: InferenceServicer) -> None:
        self._servicer = servicer

    @staticmethod
    def serves(binding: Binding) -> bool:
        return (
            binding.method.full_name == INVOKE and binding.body == "*" and not binding.response_body
        )

    @staticmethod
    def request(
        variables: Mapping[str, str], query: Mapping[str, str], body: bytes
    ) -> invoke_pb2.InvokeRequest | None:
        return request_message(variables, query, body)

    async def call(self, message: invoke_pb2.InvokeRequest, context: RestContext) -> InvokeResult:
        return await self._servicer.invoke(message, context)  # type: ignore[arg-type]

    def answer(self, result: InvokeResult, message: invoke_pb2.InvokeRequest) -> bytes:
        """The HTTP body: this module's conversion, else the generic one of the servicer's
        InvokeResponse, in the view `message` (from `request`) asks for."""
        view = convert.response_view(message.view)
        fast = answer_bytes(result, self._servicer.json_limit, view)
        if fast is not None:
            return fast
        return transcode.dumps(transcode.to_json(self._servicer.invoke_response(result, view)))
