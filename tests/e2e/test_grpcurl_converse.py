"""docs/converse.md's grpcurl example, run as printed against `sagewire local` (what `make run`
starts): three turns on the `chat` route given on standard input."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from processes import REPO, Process, grpcurl, grpcurl_messages, sagewire_process

pytestmark = pytest.mark.e2e

DOC = REPO / "docs" / "converse.md"
# The documented command: `$ grpcurl ARGS <<'EOF'`, the messages, then `EOF`.
EXAMPLE = re.compile(r"^\$ grpcurl (?P<args>.+?) <<'EOF'\n(?P<stdin>.*?)^EOF$", re.S | re.M)


@pytest.fixture(scope="module")
def local() -> Iterator[Process]:
    with sagewire_process("local", "--config", "config/local.toml") as process:
        yield process


def documented_example(doc: Path) -> tuple[list[str], str]:
    match = EXAMPLE.search(doc.read_text(encoding="utf-8"))
    assert match, f"no grpcurl heredoc example in {doc}"
    return match["args"].replace("\\\n", " ").split(), match["stdin"]


def test_documented_three_turn_conversation_runs_as_printed(local: Process) -> None:
    args, stdin = documented_example(DOC)
    assert "localhost:50051" in args
    assert stdin.count('"turn"') == 3
    result = grpcurl(*(local.target if a == "localhost:50051" else a for a in args), stdin=stdin)
    assert result.returncode == 0, result.stderr
    got = grpcurl_messages(result.stdout)
    assert got[0]["opened"]["model"] == "chat"
    assert got[0]["opened"]["session_id"]
    assert got[0]["opened"]["session_expires_at"].endswith("Z")
    firsts = [m["chunk"]["json"] for m in got if "chunk" in m and "turn" in m["chunk"]["json"]]
    firsts = [j for j in firsts if "previous" in j]
    assert firsts == [
        {"turn": 1, "previous": None},
        {"turn": 2, "previous": "hello there"},
        {"turn": 3, "previous": "how are you"},
    ]
    ends = [m["turn_end"] for m in got if "turn_end" in m]
    assert [e["turn_id"] for e in ends] == ["t1", "t2", "t3"]
    assert all(e["invoked_production_variant"] == "AllTraffic" for e in ends)
    # Every chunk is tagged with its turn, in order.
    tags = [m["chunk"]["turn_id"] for m in got if "chunk" in m]
    assert tags == sorted(tags)


def test_turn_error_travels_in_band(local: Process) -> None:
    stdin = "\n".join(
        [
            '{"open": {"model": "chat"}}',
            '{"turn": {"turn_id": "bad", "json": {"prompt": "no text"}}}',
            '{"turn": {"turn_id": "ok", "json": {"text": "fine"}}}',
        ]
    )
    result = grpcurl(
        "-plaintext", "-d", "@", local.target, "sagewire.v1.InferenceService/Converse", stdin=stdin
    )
    assert result.returncode == 0, result.stderr
    got = grpcurl_messages(result.stdout)
    error = next(m["turn_error"] for m in got if "turn_error" in m)
    assert error["turn_id"] == "bad"
    assert error["status"]["code"] == 3  # INVALID_ARGUMENT
    assert "MODEL_ERROR" in json.dumps(error["status"]["details"])
    assert any(m.get("turn_end", {}).get("turn_id") == "ok" for m in got)
