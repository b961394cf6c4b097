"""Decoding SageMaker's response event stream (`application/vnd.amazon.eventstream`).

Why not botocore's `EventStreamBuffer`: it re-slices its buffer for every header field and
every message, copying the rest of the received chunk each time, and parses the same three
PayloadPart headers again for every part. On a stream of small parts that was most of the
adapter's CPU per relayed part (see docs/benchmarks.md). This decoder walks a memoryview by
offset, copies each payload once, compacts its buffer once per chunk, and parses each distinct
header block once per process (every PayloadPart of every stream carries the same block). It
makes the same checks (both CRCs, the header and payload limits) and raises botocore's own
exceptions, so errors map exactly as before.

Frame (big-endian): total_len u32, headers_len u32, prelude_crc u32 (CRC32 of the first 8
bytes), headers, payload, message_crc u32 (CRC32 of everything before it). Header: name_len u8,
name (UTF-8), type u8, value.
"""

from __future__ import annotations

import binascii
import struct
from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

from botocore.eventstream import (
    ChecksumMismatch,
    DuplicateHeader,
    InvalidHeadersLength,
    InvalidPayloadLength,
    ParserError,
)

# botocore's limits for one message.
MAX_HEADERS_BYTES = 128 * 1024
MAX_PAYLOAD_BYTES = 24 * 1024 * 1024
# Distinct header blocks remembered per process: streams share the PayloadPart block and end
# with one of a few exception blocks. Past the bound, blocks are parsed and not remembered.
_HEADER_CACHE_SIZE = 64

_PRELUDE = struct.Struct(">III")
_CRC = struct.Struct(">I")
_OVERHEAD = _PRELUDE.size + _CRC.size
# Header value type → fixed-size struct (types 6 and 7 carry a u16 length instead).
_FIXED: dict[int, struct.Struct] = {
    2: struct.Struct(">b"),
    3: struct.Struct(">h"),
    4: struct.Struct(">i"),
    5: struct.Struct(">q"),
    8: struct.Struct(">q"),  # timestamp, milliseconds since the epoch (as botocore returns it)
}
_U16 = struct.Struct(">H")
_UUID_BYTES = 16

type HeaderValue = bool | int | bytes | str

_header_cache: dict[bytes, Mapping[str, HeaderValue]] = {}


class Frame(NamedTuple):
    """One decoded message: its headers (read-only) and payload."""

    headers: Mapping[str, HeaderValue]
    payload: bytes


def _header_value(block: bytes, pos: int, kind: int) -> tuple[HeaderValue, int]:
    """The value of type `kind` at `pos`, and the position after it (botocore's types)."""
    if kind in (0, 1):
        return kind == 0, pos
    if kind in (6, 7):
        (length,) = _U16.unpack_from(block, pos)
        pos += 2
        raw = block[pos : pos + length]
        if len(raw) != length:
            raise ParserError("event-stream header value runs past its message")
        return (raw.decode("utf-8") if kind == 7 else raw), pos + length
    if kind == 9:
        return block[pos : pos + _UUID_BYTES], pos + _UUID_BYTES
    fixed = _FIXED.get(kind)
    if fixed is None:
        raise ParserError(f"unknown event-stream header type {kind}")
    return fixed.unpack_from(block, pos)[0], pos + fixed.size


def parse_headers(block: bytes) -> dict[str, HeaderValue]:
    headers: dict[str, HeaderValue] = {}
    pos = 0
    try:
        while pos < len(block):
            end = pos + 1 + block[pos]
            name = block[pos + 1 : end].decode("utf-8")
            value, pos = _header_value(block, end + 1, block[end])
            if name in headers:
                raise DuplicateHeader(name)
            headers[name] = value
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise ParserError(f"malformed event-stream headers: {exc}") from None
    if pos != len(block):
        raise ParserError("event-stream headers run past their declared length")
    return headers


def _parsed(block: bytes) -> Mapping[str, HeaderValue]:
    headers = _header_cache.get(block)
    if headers is None:
        headers = MappingProxyType(parse_headers(block))
        if len(_header_cache) < _HEADER_CACHE_SIZE:
            _header_cache[block] = headers
    return headers


class FrameDecoder:
    """Feed response-body chunks in, get whole frames out. Holds at most one partial frame."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> list[Frame]:
        buffer = self._buffer
        buffer += chunk
        frames: list[Frame] = []
        offset = 0
        view = memoryview(buffer)
        try:
            while len(buffer) - offset >= _PRELUDE.size:
                total, headers_len, prelude_crc = _PRELUDE.unpack_from(view, offset)
                actual = binascii.crc32(view[offset : offset + 8])
                if actual != prelude_crc:
                    raise ChecksumMismatch(prelude_crc, actual)
                if headers_len > MAX_HEADERS_BYTES:
                    raise InvalidHeadersLength(headers_len)
                payload_len = total - headers_len - _OVERHEAD
                if payload_len > MAX_PAYLOAD_BYTES:
                    raise InvalidPayloadLength(payload_len)
                if payload_len < 0:
                    raise ParserError(f"event-stream message length {total} is too short")
                end = offset + total
                if len(buffer) < end:
                    break  # the rest of this frame is in a later chunk
                (message_crc,) = _CRC.unpack_from(view, end - _CRC.size)
                actual = binascii.crc32(view[offset + 8 : end - _CRC.size], prelude_crc)
                if actual != message_crc:
                    raise ChecksumMismatch(message_crc, actual)
                start = offset + _PRELUDE.size
                frames.append(
                    Frame(
                        _parsed(bytes(view[start : start + headers_len])),
                        bytes(view[start + headers_len : end - _CRC.size]),
                    )
                )
                offset = end
        finally:
            view.release()
        if offset:
            del buffer[:offset]
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame waiting for the next chunk."""
        return len(self._buffer)
