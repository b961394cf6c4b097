"""Encode AWS event-stream frames (``application/vnd.amazon.eventstream``).

Why: InvokeEndpointWithResponseStream answers with a binary frame stream that botocore parses
with ``EventStreamBuffer``. The emulator needs only the encoder and only string headers, so a
few lines of ``struct`` + ``binascii.crc32`` beat a dependency. Functions here are pure.

Frame (big-endian): total_len u32, headers_len u32, prelude_crc u32 (CRC32 of the first 8
bytes), headers, payload, message_crc u32 (CRC32 of everything before it). Header: name_len u8,
name, type u8 (7 = string), value_len u16, value (UTF-8).
"""

from __future__ import annotations

import binascii
import json
import struct
from collections.abc import Mapping

CONTENT_TYPE = "application/vnd.amazon.eventstream"

_PRELUDE = struct.Struct(">II")
_CRC = struct.Struct(">I")
_STRING_TYPE = 7
_PRELUDE_LEN = _PRELUDE.size + _CRC.size
MAX_PAYLOAD_BYTES = 24 * 1024 * 1024  # botocore refuses longer payloads
MAX_HEADERS_BYTES = 128 * 1024


def _encode_headers(headers: Mapping[str, str]) -> bytes:
    out = bytearray()
    for name, value in headers.items():
        raw_name = name.encode("utf-8")
        raw_value = value.encode("utf-8")
        if not 0 < len(raw_name) < 256:
            raise ValueError(f"event-stream header name must be 1-255 bytes: {name!r}")
        if len(raw_value) > 0xFFFF:
            raise ValueError(f"event-stream header value too long for {name!r}")
        out += struct.pack(">B", len(raw_name)) + raw_name
        out += struct.pack(">BH", _STRING_TYPE, len(raw_value)) + raw_value
    return bytes(out)


def encode_frame(headers: Mapping[str, str], payload: bytes) -> bytes:
    """One complete event-stream message with string ``headers`` and raw ``payload``."""
    raw_headers = _encode_headers(headers)
    if len(raw_headers) > MAX_HEADERS_BYTES:
        raise ValueError(f"event-stream headers exceed {MAX_HEADERS_BYTES} bytes")
    return _frame(raw_headers, payload)


def _frame(raw_headers: bytes, payload: bytes) -> bytes:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"event-stream payload exceeds {MAX_PAYLOAD_BYTES} bytes")
    total = _PRELUDE_LEN + len(raw_headers) + len(payload) + _CRC.size
    prelude = _PRELUDE.pack(total, len(raw_headers))
    head = prelude + _CRC.pack(binascii.crc32(prelude)) + raw_headers
    return b"".join((head, payload, _CRC.pack(binascii.crc32(payload, binascii.crc32(head)))))


# PayloadPart headers never change: encode them once (streams send one frame per part).
_PAYLOAD_PART_HEADERS = _encode_headers(
    {
        ":event-type": "PayloadPart",
        ":content-type": "application/octet-stream",
        ":message-type": "event",
    }
)


def payload_part(data: bytes) -> bytes:
    """A ``PayloadPart`` event carrying ``data`` (the model's bytes, boundaries arbitrary)."""
    return _frame(_PAYLOAD_PART_HEADERS, data)


def _exception(exception_type: str, body: Mapping[str, str]) -> bytes:
    return encode_frame(
        {
            ":exception-type": exception_type,
            ":content-type": "application/json",
            ":message-type": "exception",
        },
        json.dumps(dict(body)).encode(),
    )


def model_stream_error(message: str, error_code: str) -> bytes:
    """A ``ModelStreamError`` exception event (``ErrorCode`` e.g. ``StreamBroken``)."""
    return _exception("ModelStreamError", {"Message": message, "ErrorCode": error_code})


def internal_stream_failure(message: str) -> bytes:
    """An ``InternalStreamFailure`` exception event."""
    return _exception("InternalStreamFailure", {"Message": message})
