"""The `sse` framing (sagewire.core.framing.SseFramer): one message per Server-Sent Event,
however SageMaker cuts the stream into PayloadParts."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sagewire.core.errors import SagewireError
from sagewire.core.framing import SseFramer
from sagewire.emulator.sse_tokens import events as demo_events


def _frame(parts: list[bytes], max_event_bytes: int = 1 << 20) -> list[bytes]:
    framer = SseFramer(max_event_bytes)
    out = [event for part in parts for event in framer.feed(part)]
    return [*out, *framer.flush()]


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        (b'data: {"a": 1}\n\n', [b'{"a": 1}']),
        (b"data:no-space\n\n", [b"no-space"]),
        (b"data:  two spaces\n\n", [b" two spaces"]),  # only one space is removed
        (b"data: a\ndata: b\n\n", [b"a\nb"]),  # multi-line data joined with LF
        (b"data: a\r\ndata: b\r\n\r\n", [b"a\nb"]),  # CRLF
        (b"data: a\rdata: b\r\r", [b"a\nb"]),  # bare CR
        (b": keep-alive\n\n: another\ndata: x\n\n", [b"x"]),  # comments dropped
        (b"\n\n\n\ndata: x\n\n\n\n", [b"x"]),  # blank lines dropped
        (b"event: token\nid: 7\nretry: 10\ndata: x\n\n", [b"x"]),  # other fields not relayed
        (b"event: ping\n\n", []),  # an event without data is not an event
        (b"data\n\n", [b""]),  # a field without colon: empty data
        (b"data:\n\n", [b""]),
        (b"data: [DONE]\n\n", []),  # the OpenAI-style end marker
        (b"data: [DONE] \n\n", [b"[DONE] "]),  # only the exact marker
        (b"\xef\xbb\xbfdata: bom\n\n", [b"bom"]),
        (b"data: cut off at the end", [b"cut off at the end"]),  # nothing received is lost
        (b"data: last\n", [b"last"]),
        ("data: héllo 日本\n\n".encode(), ["héllo 日本".encode()]),
    ],
)
def test_events(stream: bytes, expected: list[bytes]) -> None:
    assert _frame([stream]) == expected


def _cuts(data: bytes) -> st.SearchStrategy[list[bytes]]:
    def split(points: list[int]) -> list[bytes]:
        edges = [0, *sorted(points), len(data)]
        return [data[a:b] for a, b in itertools.pairwise(edges)]

    return st.lists(st.integers(0, len(data)), max_size=len(data) + 1).map(split)


_STREAM = (
    b"\xef\xbb\xbf: hi\r\n\r\n"
    + 'data: {"t": "h\u00e9llo \u65e5\u672c \U0001f600"}\r\n\r\n'.encode()
    + b"data: line one\rdata: line two\r\r"
    + b"event: x\ndata: [DONE]\n\n"
    + b"data: tail"
)
_EXPECTED = [
    '{"t": "h\u00e9llo \u65e5\u672c \U0001f600"}'.encode(),
    b"line one\nline two",
    b"tail",
]


@given(st.data())
def test_any_cut_of_the_parts_gives_the_same_events(data: st.DataObject) -> None:
    parts = data.draw(_cuts(_STREAM))
    assert _frame(parts) == _EXPECTED
    for event in _frame(parts):
        event.decode()  # every event is whole UTF-8


@given(st.data())
def test_the_demo_models_answer_frames_the_same_however_cut(data: st.DataObject) -> None:
    stream = b"".join(demo_events("h\u00e9llo wide \u4e16\u754c"))
    parts = data.draw(_cuts(stream))
    got = _frame(parts)
    assert len(got) == 4  # three words and the final event; the comment and [DONE] dropped
    assert got[-1] == '{"token": null,\n"generated_text": "h\u00e9llo wide \u4e16\u754c"}'.encode()


def test_an_event_over_the_bound_is_refused() -> None:
    with pytest.raises(SagewireError) as info:
        _frame([b"data: " + b"x" * 50 + b"\n", b"data: y\n\n"], max_event_bytes=40)
    assert info.value.reason == "RECORD_TOO_LARGE"
    with pytest.raises(SagewireError):
        _frame([b"data: " + b"x" * 50], max_event_bytes=40)  # a line without its end
