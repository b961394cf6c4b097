"""docs/rest.md's tables are the code's: the route table against the descriptors' HTTP rules,
the status table against the google.rpc.Code → HTTP mapping the bridge applies."""

from __future__ import annotations

import re
from pathlib import Path

from google.rpc import code_pb2

from sagewire.transports.rest.app import SERVICES
from sagewire.transports.rest.errors import HTTP_STATUS
from sagewire.transports.rest.routes import bindings

DOC = (Path(__file__).resolve().parents[2] / "docs" / "rest.md").read_text()


def test_route_table_lists_every_binding() -> None:
    rows = set(
        re.findall(
            r"^\| `(GET|POST|PUT|PATCH|DELETE)` \| `(/v1/[^`]*)` \| `(\w+)\.(\w+)`", DOC, re.M
        )
    )
    expected = {
        (b.http_method, b.template.source, b.method.containing_service.name, b.method.name)
        for b in bindings(SERVICES)
    }
    assert rows == expected


def test_status_table_is_the_mapping() -> None:
    rows = re.findall(r"^\| `([A-Z_]+)` \((\d+)\) \| (\d{3}) \|$", DOC, re.M)
    table = {int(number): int(http) for _, number, http in rows}
    assert table == HTTP_STATUS
    for name, number, _ in rows:
        assert code_pb2.Code.Value(name) == int(number)
