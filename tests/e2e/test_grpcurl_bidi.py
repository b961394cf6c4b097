"""docs/converse.md's grpcurl example on the `bidi-echo` route, run as printed against
`sagewire local` (what `make run` starts: uvloop, the emulator's HTTP/2 listener with a fresh CA):
grpcurl -> sagewire -> the HTTP/2 SDK -> the emulator over TLS + HTTP/2."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator

import pytest
from processes import REPO, Process, grpcurl, grpcurl_messages, sagewire_process

pytestmark = pytest.mark.e2e

DOC = REPO / "docs" / "converse.md"
# A documented command: `$ grpcurl ARGS <<'EOF'`, the messages, then `EOF`.
EXAMPLE = re.compile(r"^\$ grpcurl (?P<args>.+?) <<'EOF'\n(?P<stdin>.*?)^EOF$", re.S | re.M)
# The documented answer: the ```json block right after the example.
ANSWER = re.compile(r"```json\n(?P<json>.*?)```", re.S)


@pytest.fixture(scope="module")
def local() -> Iterator[Process]:
    with sagewire_process("local", "--config", "config/local.toml") as process:
        yield process


def bidi_example() -> tuple[list[str], str, str]:
    """(grpcurl arguments, standard input, the answer printed after it)."""
    text = DOC.read_text(encoding="utf-8")
    for match in EXAMPLE.finditer(text):
        if '"model": "bidi-echo"' in match["stdin"]:
            answer = ANSWER.search(text, match.end())
            assert answer, "no answer printed after the bidi-echo example"
            return match["args"].split(), match["stdin"], answer["json"]
    raise AssertionError(f"no grpcurl example on bidi-echo in {DOC}")


def test_documented_bidi_echo_example_runs_as_printed(local: Process) -> None:
    args, stdin, printed = bidi_example()
    assert "localhost:50051" in args
    result = grpcurl(*(local.target if a == "localhost:50051" else a for a in args), stdin=stdin)
    assert result.returncode == 0, result.stderr  # the call ended with OK
    got = grpcurl_messages(result.stdout)
    # The demo is deterministic, so the answer is exactly what the page shows.
    assert got == grpcurl_messages(printed)
    bodies = [base64.b64decode(m["chunk"]["body"]) for m in got if "chunk" in m]
    assert bodies[:2] == [b"HELLO ", b"WORLD"]
    assert bodies[3] == b"BINARY"


def test_an_opening_a_bidi_stream_cannot_honour_names_the_field(local: Process) -> None:
    stdin = '{"open": {"model": "bidi-echo", "accept": "text/plain"}}'
    result = grpcurl(
        "-plaintext", "-d", "@", local.target, "sagewire.v1.InferenceService/Converse", stdin=stdin
    )
    assert result.returncode != 0
    assert "InvalidArgument" in result.stderr
    assert "accept" in result.stderr
