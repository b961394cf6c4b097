"""The OpenAPI 3.1 document: valid under openapi-spec-validator, covering every RPC with a
google.api.http rule (listed here from the descriptors independently of the generator) and the
bridge's own routes, with the proto comments as descriptions."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from google.api import annotations_pb2
from openapi_spec_validator import validate

from sagewire.transports.rest import openapi
from sagewire.transports.rest.openapi_schema import camel
from sagewire.v1 import inference_service_pb2, model_service_pb2


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(openapi.document_bytes())
    return loaded


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    validate(document)  # raises OpenAPIValidationError with the path of the problem


def _annotated() -> list[tuple[str, str, str]]:
    found = []
    for file in (inference_service_pb2, model_service_pb2):
        for service in file.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                rule = method.GetOptions().Extensions[annotations_pb2.http]
                kind = rule.WhichOneof("pattern")
                if kind is not None:
                    found.append((method.name, kind, getattr(rule, kind)))
    return found


def test_every_annotated_rpc_is_described(document: dict[str, Any]) -> None:
    annotated = _annotated()
    assert len(annotated) >= 8  # guards against reading no rules at all
    for name, verb, path in annotated:
        operation = document["paths"][re.sub(r"\{([^}=]+)[^}]*\}", r"{\1}", path)][verb]
        assert operation["operationId"].endswith(f"_{name}")
        assert operation["description"], name


def test_the_bridges_own_routes_are_described(document: dict[str, Any]) -> None:
    paths = document["paths"]
    assert "post" in paths["/v1/models/{model}/invocations"]
    assert "post" in paths["/v1/models/{model}/invocations-response-stream"]
    assert "post" in paths["/v1/models/{model}:uploadAsync"]
    assert "101" in paths["/v1/models/{model}:converse"]["get"]["responses"]
    assert "get" in paths["/v1/openapi.json"]
    headers = {p["name"] for p in paths["/v1/models/{model}/invocations"]["post"]["parameters"]}
    assert {"X-Amzn-SageMaker-Target-Variant", "Content-Type", "Grpc-Timeout"} <= headers


def test_proto_comments_become_descriptions(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    request = schemas["sagewire.v1.InvokeRequest"]
    assert request["description"].startswith("A real-time inference request (InvokeEndpoint).")
    assert "At most one of `body`, `json` (oneof `payload`)" in request["description"]
    assert request["properties"]["contentType"]["description"] == (
        "MIME type of the payload; empty uses the route default."
    )
    invoke = document["paths"]["/v1/models/{model}:invoke"]["post"]
    assert invoke["summary"].startswith("Real-time inference: one request, one response")
    # The path variable is not repeated in the body.
    body = invoke["requestBody"]["content"]["application/json"]["schema"]
    assert "model" not in body["properties"]
    assert "json" in body["properties"]


def test_proto3_json_mapping(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    stream = schemas["sagewire.v1.InvokeStreamResponse"]["properties"]
    assert stream["index"]["type"] == ["string", "integer"]  # uint64
    assert stream["body"] == {
        "type": "string",
        "contentEncoding": "base64",
        "description": stream["body"]["description"],
    }
    framing = schemas["sagewire.v1.Framing"]
    assert framing["enum"] == ["FRAMING_UNSPECIFIED", "FRAMING_RAW", "FRAMING_LINES", "FRAMING_SSE"]
    model = schemas["sagewire.v1.Model"]["properties"]
    assert model["timeout"]["type"] == "string"  # Duration
    assert model["allowedOptions"]["type"] == "array"
    assert "google.rpc.Status" in schemas


def test_streaming_rpcs_offer_ndjson_and_sse(document: dict[str, Any]) -> None:
    ok = document["paths"]["/v1/models/{model}:invokeStream"]["post"]["responses"]["200"]
    assert set(ok["content"]) == {"application/x-ndjson", "text/event-stream"}


def test_camel_matches_protoc() -> None:
    assert camel("invoked_production_variant") == "invokedProductionVariant"
    assert camel("json") == "json"
