"""Path templates of `google.api.HttpRule` (google/api/http.proto): parsing and matching.

Grammar (http.proto, "Path template syntax"):

    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    FieldPath = IDENT { "." IDENT } ;
    Verb     = ":" LITERAL ;

Matching follows the same file: `*` matches one segment, `**` zero or more; `{var}` is
`{var=*}`; a single-segment variable is percent-decoded in full, a multi-segment one keeps
`%2F` (reserved expansion). A `:verb` suffix is split off the last segment before the
variables are matched, but only when it is a verb some template registers (Envoy's default,
`match_unregistered_custom_verb: false`), so `/v1/models/m-1:invoke` is never a model named
"m-1:invoke", while an unknown `:suffix` stays part of the segment.

Why our own: no maintained Python library matches HttpRule templates (grpc-gateway and Envoy
do it in Go and C++); this is the one piece of transcoding sagewire writes itself, kept
small and unit-tested against the examples of http.proto.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_LITERAL = re.compile(r"^[^/{}*:=]+$")


class TemplateError(ValueError):
    """A path template that does not follow http.proto's grammar."""


@dataclass(frozen=True)
class Variable:
    """A `{field.path=...}` capture covering segments [start, end) (end None: to the end)."""

    field_path: str
    start: int
    end: int | None

    @property
    def multi_segment(self) -> bool:
        return self.end is None or self.end - self.start > 1


@dataclass(frozen=True)
class PathTemplate:
    """A parsed template: segments are literals, "*" or "**"."""

    source: str
    segments: tuple[str, ...]
    variables: tuple[Variable, ...]
    verb: str

    def match(self, segments: list[str], verb: str) -> dict[str, str] | None:
        """The variables' values when `segments` (raw, still percent-encoded) and `verb` match,
        else None."""
        if verb != self.verb:
            return None
        pattern = self.segments
        if "**" in pattern:
            fixed = len(pattern) - 1
            if len(segments) < fixed:
                return None
            wide = len(segments) - fixed
        elif len(segments) != len(pattern):
            return None
        else:
            wide = 0
        # Map each pattern segment to the span of request segments it covers.
        spans: list[tuple[int, int]] = []
        position = 0
        for part in pattern:
            width = wide if part == "**" else 1
            span = segments[position : position + width]
            if part not in ("*", "**") and span != [part]:
                return None
            if part == "*" and not span[0]:
                return None
            spans.append((position, position + width))
            position += width
        values: dict[str, str] = {}
        for variable in self.variables:
            start = spans[variable.start][0]
            end = spans[-1][1] if variable.end is None else spans[variable.end - 1][1]
            raw = segments[start:end]
            if variable.multi_segment:
                values[variable.field_path] = "/".join(_decode_reserved(s) for s in raw)
            else:
                values[variable.field_path] = unquote(raw[0])
        return values

    def specificity(self) -> tuple[int, ...]:
        """Sort key: literal segments beat `*`, which beats `**` (earlier segments first)."""
        return tuple(0 if s == "**" else 1 if s == "*" else 2 for s in self.segments)


def _decode_reserved(segment: str) -> str:
    # Reserved expansion: everything is decoded except an encoded slash.
    return "%2F".join(unquote(part) for part in re.split("%2[fF]", segment))


def parse_template(source: str) -> PathTemplate:
    """Parse an HttpRule path; raises TemplateError naming the problem."""
    if not source.startswith("/"):
        raise TemplateError(f"{source!r}: a path template starts with '/'")
    body, verb = source[1:], ""
    # The verb is a ':' after the last '/' and outside any variable.
    depth = 0
    for index, char in enumerate(body):
        depth += char == "{"
        depth -= char == "}"
        if char == ":" and depth == 0:
            body, verb = body[:index], body[index + 1 :]
            if not _LITERAL.match(verb) or "/" in verb:
                raise TemplateError(f"{source!r}: bad verb {verb!r}")
            break
    segments: list[str] = []
    variables: list[Variable] = []
    for token in _split_top(body, source):
        if token.startswith("{"):
            if not token.endswith("}"):
                raise TemplateError(f"{source!r}: unclosed variable {token!r}")
            path, _, inner = token[1:-1].partition("=")
            if not _IDENT.match(path):
                raise TemplateError(f"{source!r}: bad field path {path!r}")
            if any(v.field_path == path for v in variables):
                raise TemplateError(f"{source!r}: variable {path!r} appears twice")
            parts = inner.split("/") if inner else ["*"]
            for part in parts:
                _check_segment(part, source)
            start = len(segments)
            segments += parts
            end = None if "**" in parts else len(segments)
            variables.append(Variable(path, start, end))
        else:
            _check_segment(token, source)
            segments.append(token)
    if segments.count("**") > 1 or ("**" in segments and segments[-1] != "**"):
        raise TemplateError(f"{source!r}: '**' may only be the last segment")
    return PathTemplate(source, tuple(segments), tuple(variables), verb)


def _split_top(body: str, source: str) -> list[str]:
    """Split on '/' outside braces."""
    tokens, current, depth = [], "", 0
    for char in body:
        if char == "{":
            if depth:
                raise TemplateError(f"{source!r}: nested variables are not allowed")
            depth = 1
        elif char == "}":
            depth = 0
        if char == "/" and not depth:
            tokens.append(current)
            current = ""
        else:
            current += char
    tokens.append(current)
    return tokens


def _check_segment(segment: str, source: str) -> None:
    if segment not in ("*", "**") and not _LITERAL.match(segment):
        raise TemplateError(f"{source!r}: bad segment {segment!r}")


def split_path(path: str, verbs: frozenset[str]) -> tuple[list[str], str]:
    """A request path (raw, percent-encoded, no query) as segments and its verb; the verb is
    split off only when it is one of `verbs`, the verbs the templates register. A trailing
    slash is ignored (`/v1/models/` is `/v1/models`), as Envoy and grpc-gateway do."""
    segments = path[1:].split("/") if path.startswith("/") else path.split("/")
    if len(segments) > 1 and not segments[-1]:
        segments.pop()
    last = segments[-1]
    head, colon, verb = last.rpartition(":")
    if colon and verb in verbs:
        segments[-1] = head
        return segments, verb
    return segments, ""
