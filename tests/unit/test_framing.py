"""LineFramer: arbitrary PayloadPart boundaries in, whole newline-terminated records out."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sagewire.core.errors import ErrorKind, SagewireError
from sagewire.core.framing import LineFramer, frame_lines

no_newline = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b""))


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points)]


@given(records=st.lists(no_newline, max_size=12), tail=no_newline, data=st.data())
def test_any_split_yields_exactly_the_records(
    records: list[bytes], tail: bytes, data: st.DataObject
) -> None:
    stream = b"".join(r + b"\n" for r in records) + tail
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=20))
    framer = LineFramer()
    out: list[bytes] = []
    for chunk in split(stream, cuts):
        out += framer.feed(chunk)
    assert out == [r + b"\n" for r in records]
    assert framer.flush() == (tail or None)
    assert framer.flush() is None


def test_several_records_in_one_chunk() -> None:
    framer = LineFramer()
    assert framer.feed(b'{"a":1}\n{"b":2}\n\n{"c"') == [b'{"a":1}\n', b'{"b":2}\n', b"\n"]
    assert framer.feed(b":3}\n") == [b'{"c":3}\n']
    assert framer.flush() is None


def test_chunk_without_newline_is_held_back() -> None:
    framer = LineFramer()
    assert framer.feed(b"par") == []
    assert framer.feed(b"") == []
    assert framer.feed(b"tial") == []
    assert framer.flush() == b"partial"


def test_record_at_the_bound_is_accepted() -> None:
    framer = LineFramer(max_record_bytes=8)
    assert framer.feed(b"1234") == []
    assert framer.feed(b"5678") == []
    assert framer.feed(b"\n") == [b"12345678\n"]


@pytest.mark.parametrize(
    "chunks",
    [
        [b"123456789"],
        [b"12345", b"6789"],
        [b"ok\n123456789"],
    ],
)
def test_record_past_the_bound_raises_record_too_large(chunks: list[bytes]) -> None:
    framer = LineFramer(max_record_bytes=8)
    with pytest.raises(SagewireError) as info:  # noqa: PT012 - the last feed raises
        for chunk in chunks:
            framer.feed(chunk)
    error = info.value
    assert error.kind is ErrorKind.RESOURCE_EXHAUSTED
    assert error.reason == "RECORD_TOO_LARGE"
    assert "longer than 8 bytes" in error.message
    assert "raw framing" in error.message


async def parts(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def test_frame_lines_over_an_async_iterator() -> None:
    records = [r async for r in frame_lines(parts(b'{"a"', b":1}\n{", b'"b":2}\n{"c"', b":3}"))]
    assert records == [b'{"a":1}\n', b'{"b":2}\n', b'{"c":3}']


async def test_frame_lines_on_an_empty_stream_yields_nothing() -> None:
    assert [r async for r in frame_lines(parts())] == []


async def test_frame_lines_passes_the_bound_on() -> None:
    records = frame_lines(parts(b"ab\n", b"abcdef"), max_record_bytes=4)
    assert await anext(records) == b"ab\n"  # records before the failure are relayed
    with pytest.raises(SagewireError, match="longer than 4 bytes"):
        await anext(records)
