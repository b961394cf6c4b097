"""JSON Schemas (OpenAPI 3.1 = JSON Schema 2020-12) of protobuf messages in the proto3 JSON
mapping, with the proto comments as descriptions.

Why our own: the OpenAPI generators for protos (protoc-gen-openapiv2 of grpc-gateway, gnostic's
protoc-gen-openapi) are Go plugins producing OpenAPI 2.0 or 3.0; the mapping below is the part
sagewire needs, read straight from the descriptor set `make protos` compiles with source info.

The mapping (protobuf.dev, "JSON Mapping"): field names in lowerCamelCase; 64-bit integers as
strings; bytes as base64 strings; enums as their value names; Timestamp and Duration as
strings; Struct/Value/ListValue as plain JSON; Any as an object with "@type".
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf import descriptor_pb2

FieldType = descriptor_pb2.FieldDescriptorProto

# SourceCodeInfo paths: FileDescriptorProto / DescriptorProto / EnumDescriptorProto /
# ServiceDescriptorProto field numbers (descriptor.proto).
_FILE_MESSAGE, _FILE_ENUM, _FILE_SERVICE = 4, 5, 6
_MESSAGE_FIELD, _MESSAGE_NESTED, _MESSAGE_ENUM = 2, 3, 4
_ENUM_VALUE, _SERVICE_METHOD = 2, 2

_INT32 = {
    FieldType.TYPE_INT32,
    FieldType.TYPE_SINT32,
    FieldType.TYPE_SFIXED32,
    FieldType.TYPE_UINT32,
    FieldType.TYPE_FIXED32,
}
_INT64 = {
    FieldType.TYPE_INT64,
    FieldType.TYPE_SINT64,
    FieldType.TYPE_SFIXED64,
    FieldType.TYPE_UINT64,
    FieldType.TYPE_FIXED64,
}
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    ".google.protobuf.Timestamp": {
        "type": "string",
        "format": "date-time",
        "description": "RFC 3339 time in UTC, e.g. 2026-01-02T03:04:05Z",
    },
    ".google.protobuf.Duration": {
        "type": "string",
        "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$",
        "description": "Seconds with an `s` suffix, e.g. 1.5s",
    },
    ".google.protobuf.Value": {"description": "Any JSON value"},
    ".google.protobuf.Struct": {"type": "object", "description": "A JSON object"},
    ".google.protobuf.ListValue": {"type": "array", "description": "A JSON array"},
    ".google.protobuf.Empty": {"type": "object"},
    ".google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
        "additionalProperties": True,
        "description": "A message of the type named by @type, its fields beside it",
    },
}


def comment(location: descriptor_pb2.SourceCodeInfo.Location) -> str:
    """A location's leading (else trailing) comment, each line stripped."""
    text = location.leading_comments or location.trailing_comments
    return "\n".join(line.strip() for line in text.strip().splitlines())


def camel(name: str) -> str:
    """protoc's JSON name of a field (lowerCamelCase), for descriptors without json_name."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


class Catalog:
    """Every message, enum, service and method of a descriptor set by full name (".pkg.Name"),
    with the comment above each (and above each field and enum value)."""

    def __init__(self, files: Iterable[descriptor_pb2.FileDescriptorProto]) -> None:
        self.messages: dict[str, descriptor_pb2.DescriptorProto] = {}
        self.enums: dict[str, descriptor_pb2.EnumDescriptorProto] = {}
        self.services: dict[str, descriptor_pb2.ServiceDescriptorProto] = {}
        self.docs: dict[str, str] = {}
        for file in files:
            self._add_file(file)

    def _add_file(self, file: descriptor_pb2.FileDescriptorProto) -> None:
        comments = {
            tuple(location.path): comment(location)
            for location in file.source_code_info.location
            if location.leading_comments or location.trailing_comments
        }
        package = f".{file.package}" if file.package else ""
        for i, message in enumerate(file.message_type):
            self._add_message(f"{package}.{message.name}", message, (_FILE_MESSAGE, i), comments)
        for i, enum in enumerate(file.enum_type):
            self._add_enum(f"{package}.{enum.name}", enum, (_FILE_ENUM, i), comments)
        for i, service in enumerate(file.service):
            name = f"{package}.{service.name}"
            self.services[name] = service
            self.docs[name] = comments.get((_FILE_SERVICE, i), "")
            for j, method in enumerate(service.method):
                path = (_FILE_SERVICE, i, _SERVICE_METHOD, j)
                self.docs[f"{name}.{method.name}"] = comments.get(path, "")

    def _add_message(
        self,
        name: str,
        message: descriptor_pb2.DescriptorProto,
        path: tuple[int, ...],
        comments: dict[tuple[int, ...], str],
    ) -> None:
        self.messages[name] = message
        self.docs[name] = comments.get(path, "")
        for j, field in enumerate(message.field):
            self.docs[f"{name}.{field.name}"] = comments.get((*path, _MESSAGE_FIELD, j), "")
        for j, nested in enumerate(message.nested_type):
            self._add_message(
                f"{name}.{nested.name}", nested, (*path, _MESSAGE_NESTED, j), comments
            )
        for j, enum in enumerate(message.enum_type):
            self._add_enum(f"{name}.{enum.name}", enum, (*path, _MESSAGE_ENUM, j), comments)

    def _add_enum(
        self,
        name: str,
        enum: descriptor_pb2.EnumDescriptorProto,
        path: tuple[int, ...],
        comments: dict[tuple[int, ...], str],
    ) -> None:
        self.enums[name] = enum
        self.docs[name] = comments.get(path, "")
        for j, value in enumerate(enum.value):
            self.docs[f"{name}.{value.name}"] = comments.get((*path, _ENUM_VALUE, j), "")


def schema_name(full_name: str) -> str:
    """The components/schemas key of a message or enum (its full name without the dot)."""
    return full_name.lstrip(".")


def ref(full_name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{schema_name(full_name)}"}


class SchemaBuilder:
    """Builds components/schemas for the messages it is asked about and all they reach."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.schemas: dict[str, dict[str, Any]] = {}

    def type_schema(self, full_name: str) -> dict[str, Any]:
        """A reference to a message or enum schema (built on first use), or a well-known
        type's schema inline."""
        if full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[full_name])
        key = schema_name(full_name)
        if key not in self.schemas:
            self.schemas[key] = {}  # placeholder: recursive messages refer back to it
            if full_name in self.catalog.enums:
                self.schemas[key] = self._enum(full_name)
            else:
                self.schemas[key] = self.message_schema(full_name)
        return ref(full_name)

    def _enum(self, full_name: str) -> dict[str, Any]:
        enum = self.catalog.enums[full_name]
        values = "\n".join(
            f"- `{value.name}`: {self.catalog.docs.get(f'{full_name}.{value.name}', '')}"
            for value in enum.value
        )
        return {
            "type": "string",
            "enum": [value.name for value in enum.value],
            "description": f"{self.catalog.docs.get(full_name, '')}\n\n{values}".strip(),
        }

    def message_schema(
        self, full_name: str, without: frozenset[str] = frozenset()
    ) -> dict[str, Any]:
        """The object schema of a message; `without` leaves out fields (set by the path)."""
        message = self.catalog.messages[full_name]
        if message.options.map_entry:
            raise ValueError(f"{full_name} is a map entry, not a message of its own")
        properties: dict[str, Any] = {}
        oneofs: dict[int, list[str]] = {}
        for field in message.field:
            if field.name in without:
                continue
            # (OpenAPI 3.1 schemas may sit beside a $ref: JSON Schema 2020-12.)
            property_schema = self.field_schema(field)
            doc = self.catalog.docs.get(f"{full_name}.{field.name}", "")
            if doc:
                property_schema["description"] = doc
            properties[field.json_name or camel(field.name)] = property_schema
            if field.HasField("oneof_index") and not field.proto3_optional:
                oneofs.setdefault(field.oneof_index, []).append(
                    field.json_name or camel(field.name)
                )
        description = self.catalog.docs.get(full_name, "")
        for index, names in oneofs.items():
            listed = ", ".join(f"`{name}`" for name in names)
            description += (
                f"\n\nAt most one of {listed} (oneof `{message.oneof_decl[index].name}`)."
            )
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        if description.strip():
            schema["description"] = description.strip()
        return schema

    def field_schema(self, field: descriptor_pb2.FieldDescriptorProto) -> dict[str, Any]:
        if field.type == FieldType.TYPE_MESSAGE:
            entry = self.catalog.messages.get(field.type_name)
            if entry is not None and entry.options.map_entry:
                value = next(f for f in entry.field if f.name == "value")
                return {"type": "object", "additionalProperties": self._single(value)}
        single = self._single(field)
        if field.label == FieldType.LABEL_REPEATED:
            return {"type": "array", "items": single}
        return single

    def _single(self, field: descriptor_pb2.FieldDescriptorProto) -> dict[str, Any]:
        kind = field.type
        if kind in (FieldType.TYPE_MESSAGE, FieldType.TYPE_ENUM):
            return self.type_schema(field.type_name)
        if kind == FieldType.TYPE_BOOL:
            return {"type": "boolean"}
        if kind == FieldType.TYPE_STRING:
            return {"type": "string"}
        if kind == FieldType.TYPE_BYTES:
            return {"type": "string", "contentEncoding": "base64"}
        if kind in (FieldType.TYPE_FLOAT, FieldType.TYPE_DOUBLE):
            return {"type": "number"}
        if kind in _INT32:
            return {"type": "integer", "format": "int32"}
        if kind in _INT64:
            # Written as a string; a number is accepted on input too.
            return {"type": ["string", "integer"], "format": "int64"}
        raise ValueError(f"field {field.name}: no JSON mapping for type {kind}")
