"""docs/security.md's IAM table names exactly the actions of deploy/iam/sagewire-policy.json
(whose own test, tests/deploy/test_iam_policy.py, derives them from every AWS call)."""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_security_doc_table_matches_the_deployed_policy() -> None:
    policy = json.loads((REPO / "deploy" / "iam" / "sagewire-policy.json").read_text())
    granted: set[str] = set()
    for statement in policy["Statement"]:
        actions = statement["Action"]
        granted |= {actions} if isinstance(actions, str) else set(actions)
    doc = (REPO / "docs" / "security.md").read_text()
    section = doc.split("## Least-privilege IAM policy", 1)[1]
    table = set(re.findall(r"^\| `([a-z0-9]+:[A-Za-z]+)` \|", section, re.MULTILINE))
    assert table == granted
