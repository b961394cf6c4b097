"""The REST route table, read from the `google.api.http` options of the compiled descriptors.

Each annotated RPC (and each of its `additional_bindings`) becomes a `Binding`; nothing here
lists a path by hand, so a new annotated RPC is served once its servicer method exists.
`Router.match` picks the binding for a request the way http.proto describes (see http_rule).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from google.api import annotations_pb2, http_pb2
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

from sagewire.transports.rest import errors
from sagewire.transports.rest.http_rule import PathTemplate, parse_template, split_path

_PATTERNS = ("get", "put", "post", "delete", "patch")


@dataclass(frozen=True)
class Binding:
    """One HTTP method + path template bound to one RPC."""

    http_method: str
    template: PathTemplate
    body: str  # "" (no body), "*" or a top-level field name
    response_body: str  # "" (the whole response) or a top-level field name
    method: MethodDescriptor

    @property
    def service(self) -> str:
        return self.method.containing_service.full_name

    @property
    def streaming(self) -> bool:
        return bool(self.method.server_streaming)


def _bindings_of(method: MethodDescriptor, rule: http_pb2.HttpRule) -> list[Binding]:
    kind = rule.WhichOneof("pattern")
    if kind is None:
        return []
    if kind == "custom":
        verb, path = rule.custom.kind.upper(), rule.custom.path
    else:
        verb, path = kind.upper(), getattr(rule, kind)
    found = [Binding(verb, parse_template(path), rule.body, rule.response_body, method)]
    for extra in rule.additional_bindings:
        found += _bindings_of(method, extra)
    return found


def bindings(services: Iterable[ServiceDescriptor]) -> list[Binding]:
    """Every HTTP binding of the services' RPCs. Client-streaming RPCs have none (an HTTP
    request body is one message; UploadAsync and Converse get their own routes)."""
    found: list[Binding] = []
    for service in services:
        for method in service.methods:
            if method.client_streaming or not method.GetOptions().HasExtension(
                annotations_pb2.http
            ):
                continue
            found += _bindings_of(method, method.GetOptions().Extensions[annotations_pb2.http])
    return found


class Router:
    """Finds the binding of a request; raises the 404 / 405 SagewireError otherwise."""

    def __init__(self, table: list[Binding]) -> None:
        self.bindings = table
        self.verbs = frozenset(b.template.verb for b in table if b.template.verb)

    def add_verbs(self, verbs: set[str]) -> None:
        """Custom verbs of routes served beside transcoding, split off like the rules' own."""
        self.verbs = self.verbs | frozenset(verbs)

    def match(self, http_method: str, path: str) -> tuple[Binding, dict[str, str]]:
        segments, verb = split_path(path, self.verbs)
        best: tuple[Binding, dict[str, str]] | None = None
        allowed: list[str] = []
        for binding in self.bindings:
            values = binding.template.match(segments, verb)
            if values is None:
                continue
            if binding.http_method != http_method:
                allowed.append(binding.http_method)
                continue
            if best is None or binding.template.specificity() > best[0].template.specificity():
                best = (binding, values)
        if best is not None:
            return best
        if allowed:
            raise errors.method_not_allowed(http_method, path, sorted(set(allowed)))
        raise errors.unknown_path(http_method, path)
