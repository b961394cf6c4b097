"""The adapter's event-stream decoder agrees with botocore's parser, chunked any way."""

from __future__ import annotations

import binascii
import itertools
import struct

import pytest
from botocore.eventstream import (
    ChecksumMismatch,
    DuplicateHeader,
    EventStreamBuffer,
    InvalidHeadersLength,
    InvalidPayloadLength,
    ParserError,
)
from hypothesis import given
from hypothesis import strategies as st

from sagewire.aws.eventstream import MAX_HEADERS_BYTES, MAX_PAYLOAD_BYTES, FrameDecoder
from sagewire.emulator.eventstream import model_stream_error, payload_part


def _frame(raw_headers: bytes, payload: bytes, total: int | None = None) -> bytes:
    length = 16 + len(raw_headers) + len(payload) if total is None else total
    prelude = struct.pack(">II", length, len(raw_headers))
    head = prelude + struct.pack(">I", binascii.crc32(prelude)) + raw_headers
    return head + payload + struct.pack(">I", binascii.crc32(payload, binascii.crc32(head)))


def _header(name: str, kind: int, value: bytes = b"") -> bytes:
    raw = name.encode()
    return struct.pack(">B", len(raw)) + raw + struct.pack(">B", kind) + value


# One header of every type botocore knows (0 true ... 9 uuid).
EVERY_TYPE = b"".join(
    [
        _header("t", 0),
        _header("f", 1),
        _header("b", 2, struct.pack(">b", -5)),
        _header("h", 3, struct.pack(">h", -300)),
        _header("i", 4, struct.pack(">i", 70_000)),
        _header("q", 5, struct.pack(">q", -(2**40))),
        _header("raw", 6, struct.pack(">H", 3) + b"\x00\x01\x02"),
        _header("s", 7, struct.pack(">H", 5) + "héllo".encode()[:5]),
        _header("ts", 8, struct.pack(">q", 1_700_000_000_000)),
        _header("id", 9, bytes(range(16))),
    ]
)


def _botocore(data: bytes) -> list[tuple[dict[str, object], bytes]]:
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    return [(dict(m.headers), m.payload) for m in buffer]


def _decode(chunks: list[bytes]) -> list[tuple[dict[str, object], bytes]]:
    decoder = FrameDecoder()
    return [(dict(f.headers), f.payload) for chunk in chunks for f in decoder.feed(chunk)]


def test_every_header_type_decodes_as_botocore_does() -> None:
    data = _frame(EVERY_TYPE, b"payload")
    [(headers, payload)] = _decode([data])
    assert (headers, payload) == _botocore(data)[0]
    assert headers["t"] is True
    assert headers["f"] is False
    assert headers["h"] == -300
    assert headers["raw"] == b"\x00\x01\x02"


STREAM = b"".join(
    [
        payload_part(b'{"token": "a"}\n'),
        payload_part(b"x" * 5000),
        _frame(EVERY_TYPE, b""),
        payload_part(b"\n"),
        model_stream_error("broken", "StreamBroken"),
    ]
)


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_any_chunking_yields_the_same_frames_as_botocore(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(STREAM)]
    chunks = [STREAM[a:b] for a, b in itertools.pairwise(points)]
    assert _decode(chunks) == _botocore(STREAM)


def test_a_partial_frame_waits_for_the_rest() -> None:
    frame = payload_part(b"abc")
    decoder = FrameDecoder()
    assert decoder.feed(frame[:-1]) == []
    assert decoder.pending == len(frame) - 1
    [whole] = decoder.feed(frame[-1:])
    assert whole.payload == b"abc"
    assert decoder.pending == 0


def test_headers_are_read_only() -> None:
    [frame] = FrameDecoder().feed(payload_part(b"abc"))
    with pytest.raises(TypeError):
        frame.headers[":event-type"] = "other"  # type: ignore[index]


@pytest.mark.parametrize("byte", [1, 9, 40])
def test_corrupt_bytes_fail_the_checksum(byte: int) -> None:
    frame = bytearray(payload_part(b"hello world"))
    frame[byte] ^= 0xFF
    with pytest.raises((ChecksumMismatch, InvalidHeadersLength, InvalidPayloadLength)):
        FrameDecoder().feed(bytes(frame))


def test_oversized_headers_and_payloads_are_refused_before_buffering() -> None:
    headers = struct.pack(">II", 16 + MAX_HEADERS_BYTES + 1, MAX_HEADERS_BYTES + 1)
    too_many_headers = headers + struct.pack(">I", binascii.crc32(headers))
    with pytest.raises(InvalidHeadersLength):
        FrameDecoder().feed(too_many_headers)
    payload = struct.pack(">II", 16 + MAX_PAYLOAD_BYTES + 1, 0)
    too_much_payload = payload + struct.pack(">I", binascii.crc32(payload))
    with pytest.raises(InvalidPayloadLength):
        FrameDecoder().feed(too_much_payload)


def test_duplicate_and_malformed_headers_are_parser_errors() -> None:
    with pytest.raises(DuplicateHeader):
        FrameDecoder().feed(_frame(_header("a", 0) + _header("a", 1), b""))
    with pytest.raises(ParserError):
        FrameDecoder().feed(_frame(_header("a", 42), b""))
    with pytest.raises(ParserError):
        FrameDecoder().feed(_frame(_header("s", 7, struct.pack(">H", 200) + b"short"), b""))
