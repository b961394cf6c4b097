"""OpenAPI 3.1 of the REST bridge, served at `GET /v1/openapi.json`, built at start-up from the
descriptor set `make protos` compiles (generated/sagewire/v1/sagewire.binpb, with source info)
so every proto comment becomes a description and nothing is listed by hand that the protos say.

Covered: every RPC with a `google.api.http` rule (the same bindings the bridge serves, from
transports.rest.routes), and the routes the bridge adds beside them: the raw model passthrough
(`…/invocations`, `…/invocations-response-stream`), UploadAsync as a streamed body, Converse
over a WebSocket, and this document. Errors everywhere are google.rpc.Status JSON.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from aiohttp import web
from google.protobuf import descriptor_pb2

from sagewire.transports.rest import passthrough, upload, websocket
from sagewire.transports.rest.openapi_schema import Catalog, SchemaBuilder, ref
from sagewire.transports.rest.routes import Binding, bindings
from sagewire.v1 import inference_service_pb2, invoke_pb2, model_service_pb2

PATH = "/v1/openapi.json"
DESCRIPTOR_SET = Path(invoke_pb2.__file__).parent / "sagewire.binpb"
SERVICES = (
    inference_service_pb2.DESCRIPTOR.services_by_name["InferenceService"],
    model_service_pb2.DESCRIPTOR.services_by_name["ModelService"],
)
STATUS = ".google.rpc.Status"
_OPTIONS = ".sagewire.v1.InvocationOptions."
NDJSON = "application/x-ndjson"
SSE = "text/event-stream"
_VARIABLE = re.compile(r"\{([^}=]+)(=[^}]*)?\}")


def load_catalog(path: Path = DESCRIPTOR_SET) -> Catalog:
    files = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes()).file
    return Catalog(files)


def openapi_path(template: str) -> str:
    """An http.proto path template as an OpenAPI path: `{name=segments}` → `{name}`."""
    return _VARIABLE.sub(lambda m: "{" + m.group(1) + "}", template)


def _error_responses() -> dict[str, Any]:
    return {
        "default": {
            "description": "An error: the HTTP status maps the google.rpc.Code (docs/rest.md); "
            "the body is the google.rpc.Status a gRPC caller gets, details included.",
            "content": {"application/json": {"schema": ref(STATUS)}},
        }
    }


def _text_param(name: str, where: str, description: str, required: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": required,
        "description": description,
        "schema": {"type": "string"},
    }


_DEADLINE = _text_param(
    "Grpc-Timeout",
    "header",
    "The caller's deadline in gRPC's format (digits + H/M/S/m/u/n, e.g. 2500m); it bounds "
    "the SageMaker call as a gRPC deadline does.",
)
_MODEL = _text_param("model", "path", "Logical model name (a route).", required=True)


class DocumentBuilder:
    """One OpenAPI document from a Catalog (comments) and the HTTP bindings."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.schemas = SchemaBuilder(catalog)
        self.paths: dict[str, dict[str, Any]] = {}

    def _doc(self, name: str) -> str:
        return self.catalog.docs.get(name, "")

    def _operation(self, path: str, method: str, operation: dict[str, Any]) -> None:
        self.paths.setdefault(path, {})[method.lower()] = operation

    def add_binding(self, binding: Binding) -> None:
        method = binding.method
        service = f".{method.containing_service.full_name}"
        request = f".{method.input_type.full_name}"
        response = f".{method.output_type.full_name}"
        in_path = {v.field_path for v in binding.template.variables}
        self.schemas.type_schema(request)  # the whole message too, for clients that model it
        doc = self._doc(f"{service}.{method.name}")
        parameters: list[dict[str, Any]] = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "description": self._doc(f"{request}.{name}"),
                "schema": self.schemas.field_schema(
                    next(f for f in self.catalog.messages[request].field if f.name == name)
                ),
            }
            for name in sorted(in_path)
        ]
        if binding.body != "*":
            parameters += self._query_parameters(request, in_path | {binding.body})
        parameters.append(_DEADLINE)
        operation: dict[str, Any] = {
            "operationId": f"{method.containing_service.name}_{method.name}",
            "tags": [method.containing_service.name],
            "summary": doc.split("\n\n")[0].replace("\n", " "),
            "description": doc,
            "parameters": parameters,
            "responses": {"200": self._success(response, binding.streaming), **_error_responses()},
        }
        if binding.body:
            operation["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {"schema": self._body(request, binding.body, in_path)}
                },
            }
        self._operation(openapi_path(binding.template.source), binding.http_method, operation)

    def _query_parameters(self, message: str, taken: set[str]) -> list[dict[str, Any]]:
        found = []
        for field in self.catalog.messages[message].field:
            if field.name in taken:
                continue
            if field.type == field.TYPE_MESSAGE:
                continue  # no message-typed query parameters on today's annotated RPCs
            found.append(
                {
                    "name": field.json_name or field.name,
                    "in": "query",
                    "required": False,
                    "description": self._doc(f"{message}.{field.name}"),
                    "schema": self.schemas.field_schema(field),
                }
            )
        return found

    def _body(self, request: str, body: str, in_path: set[str]) -> dict[str, Any]:
        if body == "*":
            schema = self.schemas.message_schema(request, without=frozenset(in_path))
            schema["description"] = (
                f"{schema.get('description', '')}\n\nFields bound by the path are set there, "
                "not in the body."
            ).strip()
            return schema
        field = next(f for f in self.catalog.messages[request].field if f.name == body)
        return self.schemas.field_schema(field)

    def _success(self, response: str, streaming: bool) -> dict[str, Any]:
        if not streaming:
            return {
                "description": self._doc(response) or "OK",
                "content": {"application/json": {"schema": self.schemas.type_schema(response)}},
            }
        return {
            "description": "A stream of messages, each flushed as it arrives: one JSON message "
            f"per line ({NDJSON}, the default) or one Server-Sent Event per message ({SSE}, "
            "when the request sends `Accept: text/event-stream`). A failure after the first "
            "message ends the stream with a final error carrying the google.rpc.Status JSON. "
            f"The schema is one message: {self._doc(response)}",
            "content": {
                NDJSON: {"schema": self.schemas.type_schema(response)},
                SSE: {"schema": {"type": "string"}},
            },
        }

    # -- routes beside the transcoded ones ----------------------------------------------------

    def add_extra_routes(self) -> None:
        self._passthrough()
        self._upload()
        self._converse()
        self._operation(
            PATH,
            "get",
            {
                "operationId": "OpenApi",
                "tags": ["REST bridge"],
                "summary": "This document.",
                "responses": {
                    "200": {
                        "description": "The OpenAPI 3.1 document of the REST bridge.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            },
        )

    def _passthrough(self) -> None:
        options = [
            _text_param(
                header,
                "header",
                f"Forwarded as SageMaker's {header}, when the route allows `{field}` "
                f"(InvocationOptions.{field}: {self._doc(_OPTIONS + field)})",
            )
            for header, field in passthrough.OPTION_HEADERS.items()
        ]
        media = [
            _text_param("Content-Type", "header", "MIME type of the body, forwarded to the model."),
            _text_param(
                "Accept", "header", "MIME type wanted from the model (`*/*`: the route default)."
            ),
        ]
        invoke = self._doc(".sagewire.v1.InferenceService.Invoke")
        stream = self._doc(".sagewire.v1.InferenceService.InvokeStream")
        body = {
            "required": True,
            "content": {"*/*": {"schema": {"type": "string", "contentMediaType": "*/*"}}},
        }
        raw = {"schema": {"type": "string", "description": "The model's bytes"}}
        self._operation(
            "/v1/models/{model}/invocations",
            "post",
            {
                "operationId": "Passthrough_Invocations",
                "tags": ["Raw model passthrough"],
                "summary": "The request body to the model as-is; the model's bytes back.",
                "description": f"{invoke}\n\nSageMaker's container contract: the body and its "
                "Content-Type go to the model unchanged, and the answer is the model's bytes "
                "with its Content-Type and SageMaker's response headers "
                f"({passthrough.VARIANT_HEADER}, X-Amzn-SageMaker-Custom-Attributes, "
                "X-Amzn-SageMaker-New-Session-Id, X-Amzn-SageMaker-Closed-Session-Id).",
                "parameters": [_MODEL, *media, *options, _DEADLINE],
                "requestBody": body,
                "responses": {
                    "200": {"description": "The model's answer.", "content": {"*/*": raw}},
                    **_error_responses(),
                },
            },
        )
        self._operation(
            "/v1/models/{model}/invocations-response-stream",
            "post",
            {
                "operationId": "Passthrough_InvocationsResponseStream",
                "tags": ["Raw model passthrough"],
                "summary": "The request body to a streaming model; its bytes back as they come.",
                "description": f"{stream}\n\nEach PayloadPart is written as one HTTP chunk as it "
                "arrives. A failure after the first byte closes the connection without the "
                "final chunk, so the client sees a truncated body rather than a clean 200.",
                "parameters": [_MODEL, *media, *options, _DEADLINE],
                "requestBody": body,
                "responses": {
                    "200": {"description": "The model's bytes.", "content": {"*/*": raw}},
                    **_error_responses(),
                },
            },
        )

    def _upload(self) -> None:
        headers = [
            _text_param(
                "Content-Type", "header", "MIME type of the input (route default if unset)."
            ),
            _text_param(
                upload.ACCEPT_HEADER, "header", "MIME type wanted from the model's output."
            ),
            _text_param(
                upload.CUSTOM_ATTRIBUTES_HEADER,
                "header",
                self._doc(".sagewire.v1.AsyncOptions.custom_attributes"),
            ),
            _text_param(
                upload.INFERENCE_ID_HEADER,
                "header",
                self._doc(".sagewire.v1.AsyncOptions.inference_id"),
            ),
            _text_param(
                upload.TTL_HEADER,
                "header",
                self._doc(".sagewire.v1.AsyncOptions.request_ttl_seconds"),
            ),
            _text_param(
                upload.INVOCATION_TIMEOUT_HEADER,
                "header",
                self._doc(".sagewire.v1.AsyncOptions.invocation_timeout_seconds"),
            ),
        ]
        self._operation(
            upload.PATH,
            "post",
            {
                "operationId": "InferenceService_UploadAsync",
                "tags": ["InferenceService"],
                "summary": self._doc(".sagewire.v1.InferenceService.UploadAsync"),
                "description": "The request body is the input, streamed to S3 as it arrives "
                "(never held whole in memory); the UploadAsyncHeader fields travel as "
                "SageMaker's InvokeEndpointAsync headers.",
                "parameters": [_MODEL, *headers, _DEADLINE],
                "requestBody": {
                    "required": True,
                    "content": {"*/*": {"schema": {"type": "string", "contentMediaType": "*/*"}}},
                },
                "responses": {
                    "200": {
                        "description": self._doc(".sagewire.v1.UploadAsyncResponse"),
                        "content": {
                            "application/json": {
                                "schema": self.schemas.type_schema(
                                    ".sagewire.v1.UploadAsyncResponse"
                                )
                            }
                        },
                    },
                    **_error_responses(),
                },
            },
        )

    def _converse(self) -> None:
        request = self.schemas.type_schema(".sagewire.v1.ConverseRequest")
        response = self.schemas.type_schema(".sagewire.v1.ConverseResponse")
        self._operation(
            openapi_path(websocket.PATH),
            "get",
            {
                "operationId": "InferenceService_Converse",
                "tags": ["InferenceService"],
                "summary": "Converse over a WebSocket (Upgrade: websocket).",
                "description": f"{self._doc('.sagewire.v1.InferenceService.Converse')}\n\n"
                "Each text frame from the client is a ConverseRequest and each frame from "
                "sagewire a ConverseResponse, in proto3 JSON (schemas "
                "sagewire.v1.ConverseRequest and sagewire.v1.ConverseResponse). The first frame "
                "is `open`. A session that ends in error sends a last frame "
                '`{"error": <google.rpc.Status>}` and closes with code 4000 + the gRPC code; '
                "a normal end closes with 1000. See docs/rest.md.",
                "parameters": [_MODEL, _DEADLINE],
                "responses": {
                    "101": {
                        "description": "Switching to the WebSocket protocol.",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "description": "Frames: client → ConverseRequest, "
                                    "server → ConverseResponse",
                                    "oneOf": [request, response],
                                }
                            }
                        },
                    },
                    **_error_responses(),
                },
            },
        )

    def document(self) -> dict[str, Any]:
        self.schemas.type_schema(STATUS)
        return {
            "openapi": "3.1.0",
            "info": {
                "title": "sagewire REST bridge",
                "version": "v1",
                "description": "The gRPC services sagewire.v1.InferenceService and "
                "sagewire.v1.ModelService over HTTP/JSON, transcoded from their "
                "google.api.http rules, plus SageMaker's raw container contract and Converse "
                "over a WebSocket. See docs/rest.md.",
            },
            "paths": dict(sorted(self.paths.items())),
            "components": {"schemas": dict(sorted(self.schemas.schemas.items()))},
        }


@cache
def document_bytes() -> bytes:
    """The document as JSON, built once per process (the descriptors do not change)."""
    builder = DocumentBuilder(load_catalog())
    for binding in bindings(SERVICES):
        builder.add_binding(binding)
    builder.add_extra_routes()
    return json.dumps(builder.document(), indent=1).encode()


async def _serve(request: web.Request) -> web.Response:
    return web.Response(body=document_bytes(), content_type="application/json")


def add_openapi_routes(app: web.Application) -> None:
    """Register `GET /v1/openapi.json`."""
    app.router.add_get(PATH, _serve)
