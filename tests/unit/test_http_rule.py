"""HttpRule path templates against the examples and rules of google/api/http.proto."""

from __future__ import annotations

import pytest

from sagewire.core.errors import SagewireError
from sagewire.transports.rest.http_rule import TemplateError, parse_template, split_path
from sagewire.transports.rest.routes import Router, bindings
from sagewire.v1 import inference_service_pb2, model_service_pb2


def _match(template: str, path: str, verbs: frozenset[str] = frozenset()) -> dict[str, str] | None:
    parsed = parse_template(template)
    segments, verb = split_path(path, verbs | ({parsed.verb} if parsed.verb else set()))
    return parsed.match(segments, verb)


@pytest.mark.parametrize(
    ("template", "path", "expected"),
    [
        # http.proto: "HTTP | GET /v1/messages/123456 → GetMessage(name: "messages/123456")"
        ("/v1/{name=messages/*}", "/v1/messages/123456", {"name": "messages/123456"}),
        # "GET /v1/messages/123456?revision=2&sub.subfield=foo": the path part.
        ("/v1/messages/{message_id}", "/v1/messages/123456", {"message_id": "123456"}),
        # additional_bindings example: two variables.
        (
            "/v1/users/{user_id}/messages/{message_id}",
            "/v1/users/me/messages/123456",
            {"user_id": "me", "message_id": "123456"},
        ),
        # Nested field paths.
        ("/v1/messages/{sub.subfield}", "/v1/messages/foo", {"sub.subfield": "foo"}),
        # "**" matches zero or more segments; a multi-segment variable keeps %2F.
        ("/v1/{name=files/**}", "/v1/files/a/b%2Fc/d", {"name": "files/a/b%2Fc/d"}),
        ("/v1/{name=files/**}", "/v1/files", {"name": "files"}),
        # A single-segment variable is decoded in full.
        ("/v1/models/{model}", "/v1/models/a%2Fb%20c", {"model": "a/b c"}),
        # Custom verbs.
        ("/v1/models/{model}:invoke", "/v1/models/m-1:invoke", {"model": "m-1"}),
        ("/v1/{name=operations/*}:cancel", "/v1/operations/42:cancel", {"name": "operations/42"}),
        # Literal-only templates.
        ("/v1/models", "/v1/models", {}),
    ],
)
def test_matches(template: str, path: str, expected: dict[str, str]) -> None:
    assert _match(template, path) == expected


@pytest.mark.parametrize(
    ("template", "path"),
    [
        ("/v1/messages/{message_id}", "/v1/messages"),
        ("/v1/messages/{message_id}", "/v1/messages/1/2"),
        ("/v1/messages/{message_id}", "/v1/messages/"),  # `*` is a non-empty segment
        ("/v1/{name=messages/*}", "/v1/users/1"),
        ("/v1/models/{model}:invoke", "/v1/models/m-1"),
        ("/v1/models/{model}", "/v1/models/m-1:invoke"),  # the registered verb is split off
    ],
)
def test_does_not_match(template: str, path: str) -> None:
    assert _match(template, path, frozenset({"invoke"})) is None


def test_an_unregistered_verb_stays_in_the_segment() -> None:
    assert _match("/v1/models/{name}", "/v1/models/m-1:other", frozenset({"invoke"})) == {
        "name": "m-1:other"
    }


@pytest.mark.parametrize(
    "template",
    [
        "v1/models",  # no leading slash
        "/v1/{name=a/{b}}",  # nested variable
        "/v1/{1bad}",
        "/v1/{a}/{a}",
        "/v1/**/x",  # ** only last
        "/v1/models/{model}:",  # empty verb
        "/v1/{name",
    ],
)
def test_bad_templates_are_refused(template: str) -> None:
    with pytest.raises(TemplateError):
        parse_template(template)


def _router() -> Router:
    return Router(
        bindings(
            [
                inference_service_pb2.DESCRIPTOR.services_by_name["InferenceService"],
                model_service_pb2.DESCRIPTOR.services_by_name["ModelService"],
            ]
        )
    )


def test_the_router_is_built_from_the_descriptors() -> None:
    routes = {(b.http_method, b.template.source, b.method.name) for b in _router().bindings}
    assert routes == {
        ("POST", "/v1/models/{model}:invoke", "Invoke"),
        ("POST", "/v1/models/{model}:invokeStream", "InvokeStream"),
        ("POST", "/v1/models/{model}:submitAsync", "SubmitAsync"),
        ("GET", "/v1/jobs/{job_id}", "GetAsyncResult"),
        ("GET", "/v1/jobs/{job_id}:watch", "WatchAsync"),
        ("GET", "/v1/jobs/{job_id}/output", "ReadAsyncOutput"),
        ("GET", "/v1/models", "ListModels"),
        ("GET", "/v1/models/{name}", "GetModel"),
    }


def test_router_picks_the_binding_or_says_why_not() -> None:
    router = _router()
    binding, values = router.match("GET", "/v1/models/m-1")
    assert (binding.method.name, values) == ("GetModel", {"name": "m-1"})
    binding, values = router.match("POST", "/v1/models/m-1:invoke")
    assert (binding.method.name, values) == ("Invoke", {"model": "m-1"})
    binding, values = router.match("GET", "/v1/jobs/j1:watch")
    assert (binding.method.name, values) == ("WatchAsync", {"job_id": "j1"})
    with pytest.raises(SagewireError) as caught:
        router.match("GET", "/v1/models/m-1:invoke")
    assert caught.value.reason == "METHOD_NOT_ALLOWED"
    assert caught.value.metadata == {"allow": "POST"}
    with pytest.raises(SagewireError) as caught:
        router.match("GET", "/v1/nothing")
    assert caught.value.reason == "UNKNOWN_ROUTE"
