"""The fast `:invoke` transcoding (transports.rest.invoke_json) against the generic one, on
generated documents: the same payload and the same answer JSON (object key order aside: the
generic path's protobuf maps do not keep it), or a hand-over to the generic path."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sagewire.core.content import is_json
from sagewire.core.errors import SagewireError
from sagewire.core.types import InvokeResult
from sagewire.transports.grpc import convert
from sagewire.transports.rest import invoke_json, transcode
from sagewire.transports.rest.app import SERVICES
from sagewire.transports.rest.routes import Router, bindings
from sagewire.v1 import common_pb2, invoke_pb2

ROUTER = Router(bindings(SERVICES))
BINDING, VARIABLES = ROUTER.match("POST", "/v1/models/echo:invoke")
LIMIT = 1024 * 1024

numbers = st.one_of(
    st.integers(min_value=-(2**60), max_value=2**60),
    st.sampled_from([2**53, -(2**53), 2**53 + 1, 0, -0.0, 1.0, 1e300, 1e-300, 0.1]),
    st.floats(allow_nan=False, allow_infinity=False),
)
texts = st.text(st.characters(codec="utf-8"), max_size=8)
documents = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, texts),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=4)),
    max_leaves=20,
)


def canonical(data: bytes) -> str:
    """JSON text with every object's keys sorted: equal for documents that differ only in key
    order, different for 1 and 1.0."""
    return json.dumps(json.loads(data), sort_keys=True)


def nested(depth: int) -> Any:
    document: Any = 1
    for level in range(depth):
        document = [document] if level % 2 else {"a": document}
    return document


def _generic_payload(body: bytes) -> tuple[bytes, str] | str:
    try:
        message = transcode.request_message(BINDING, dict(VARIABLES), [], body)
        assert isinstance(message, invoke_pb2.InvokeRequest)
        return convert.payload(message)
    except SagewireError as error:
        return f"{error.kind.name}: {error.message}"


def _check_request(body: bytes) -> None:
    generic = _generic_payload(body)
    try:
        fast = invoke_json.request_message(VARIABLES, {}, body)
    except SagewireError as error:  # only the shared JSON parser raises: the same error
        refused = f"{error.kind.name}: {error.message}"
        assert generic == refused
        return
    if fast is None:
        return  # the generic path answers
    assert not isinstance(generic, str), generic
    payload, content_type = convert.payload(fast)
    assert content_type == generic[1]
    assert canonical(payload) == canonical(generic[0])
    assert (fast.model, fast.accept) == ("echo", json.loads(body).get("accept", ""))
    generic_message = transcode.request_message(BINDING, dict(VARIABLES), [], body)
    assert isinstance(generic_message, invoke_pb2.InvokeRequest)
    assert fast.view == generic_message.view


@settings(max_examples=400, deadline=None)
@given(
    documents,
    st.sampled_from(["", "application/json", "text/csv"]),
    st.sampled_from(["", "RESPONSE_VIEW_BODY", "RESPONSE_VIEW_JSON", "RESPONSE_VIEW_FULL"]),
)
def test_a_request_payload_is_the_generic_one(document: Any, content_type: str, view: str) -> None:
    request: dict[str, Any] = {"json": document}
    if content_type:
        request["contentType"] = content_type
    if view:
        request["view"] = view
    _check_request(json.dumps(request).encode())


def test_requests_at_the_edges_agree_or_go_generic() -> None:
    edges = [
        b'{"json": 9007199254740993}',
        b'{"json": [1' + b"0" * 400 + b"]}",
        b'{"json": 1e400}',
        b'{"json": NaN}',
        b'{"json": null}',
        b'{"json": "\\ud800"}',
        b'{"json": {"a": 1, "a": 2}}',
        b'{"json": 1, "accept": 3}',
        b'{"json": 1, "model": "other"}',
        b'{"json": 1, "contentType": "a", "content_type": "b"}',
        b'{"json": 1, "options": {"customAttributes": "x"}}',
        b'{"json": 1, "view": "RESPONSE_VIEW_NOPE"}',
        b'{"json": 1, "view": 2}',
        b'{"json": 1, "view": {}}',
        b'{"json": 1, "view": "RESPONSE_VIEW_JSON"}',
        b'{"json": -0.0, "accept": "text/plain"}',
        b"[1]",
        b"{",
        json.dumps({"json": nested(invoke_json.MAX_DEPTH)}).encode(),
        json.dumps({"json": nested(60)}).encode(),
    ]
    for body in edges:
        _check_request(body)
    assert invoke_json.request_message(VARIABLES, {}, b'{"json": {"x": 1}}') is not None
    assert invoke_json.request_message(VARIABLES, {"accept": "a"}, b'{"json": 1}') is None


VIEWS = [
    common_pb2.RESPONSE_VIEW_FULL,
    common_pb2.RESPONSE_VIEW_BODY,
    common_pb2.RESPONSE_VIEW_JSON,
]


def _check_response(result: InvokeResult) -> None:
    for view in VIEWS:
        message = convert.invoke_response(result, is_json(result.content_type), LIMIT, view)
        generic = transcode.response_bytes(BINDING, message)
        fast = invoke_json.answer_bytes(result, LIMIT, view)
        if fast is not None:
            assert canonical(fast) == canonical(generic), view


@settings(max_examples=400, deadline=None)
@given(
    documents,
    st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain", ""]),
    st.sampled_from(["", "AllTraffic"]),
)
def test_an_answer_is_the_generic_one(document: Any, content_type: str, variant: str) -> None:
    body = json.dumps(document).encode()
    _check_response(
        InvokeResult(
            body=body, content_type=content_type, invoked_variant=variant, endpoint=variant
        )
    )


def test_answers_at_the_edges_agree_or_go_generic() -> None:
    bodies = [
        b"",
        b"null",
        b"9007199254740992",
        b"9007199254740993",
        b"1.0",
        b"-0.0",
        b"0.30000000000000000001",
        b'"\\ud800"',
        b"not json",
        json.dumps(nested(invoke_json.MAX_DEPTH)).encode(),
        json.dumps(nested(60)).encode(),
        b'{"b": 1, "a": [1.5, 2, {"c": null}]}',
    ]
    for body in bodies:
        _check_response(
            InvokeResult(
                body=body,
                content_type="application/json",
                custom_attributes="x=1",
                new_session_id="s; Expires=1",
                closed_session_id="c",
                endpoint="echo-fallback",
            )
        )
    assert invoke_json.answer_bytes(InvokeResult(body=b"{}", content_type="application/json"), 1)
    assert invoke_json.answer_bytes(InvokeResult(body=b"\xff", content_type="image/png"), LIMIT)


def test_the_fast_answer_covers_every_field_of_invoke_response_in_order() -> None:
    fields = sorted(invoke_pb2.InvokeResponse.DESCRIPTOR.fields, key=lambda f: f.number)
    assert [f.json_name for f in fields] == [
        "body",
        "contentType",
        "json",
        *(name for name, _ in invoke_json.RESULT_FIELDS),
    ]
