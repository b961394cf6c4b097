"""docs/resilience.md shows the service config the client uses and the tests use, as printed."""

from __future__ import annotations

import json
import re
from pathlib import Path

from sagewire.client import RETRY_SERVICE_CONFIG

DOC = Path(__file__).resolve().parents[2] / "docs" / "resilience.md"
_BLOCK = re.compile(r"<!-- doc-test: service-config[^\n]*-->\n```json\n(.*?)^```", re.S | re.M)


def test_documented_service_config_is_the_clients() -> None:
    (printed,) = _BLOCK.findall(DOC.read_text(encoding="utf-8"))
    assert json.loads(printed) == RETRY_SERVICE_CONFIG
