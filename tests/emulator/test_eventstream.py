"""The frame encoder, checked by decoding with botocore's own EventStreamBuffer."""

from __future__ import annotations

import binascii
import json
import struct

import pytest
from botocore.eventstream import EventStreamBuffer, EventStreamMessage
from hypothesis import given
from hypothesis import strategies as st

from sagewire.emulator import eventstream


def decode(data: bytes) -> list[EventStreamMessage]:
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    return list(buffer)


def test_payload_part_decodes_with_botocore_headers_and_bytes() -> None:
    [message] = decode(eventstream.payload_part(b'{"token": "hi"}\n'))
    assert message.headers == {
        ":event-type": "PayloadPart",
        ":content-type": "application/octet-stream",
        ":message-type": "event",
    }
    assert message.payload == b'{"token": "hi"}\n'
    assert message.to_response_dict()["status_code"] == 200


def test_frame_layout_lengths_and_crcs() -> None:
    frame = eventstream.encode_frame({"a": "b"}, b"xyz")
    total, headers_len, prelude_crc = struct.unpack(">III", frame[:12])
    assert total == len(frame)
    assert headers_len == 1 + 1 + 1 + 2 + 1  # name_len, "a", type, value_len, "b"
    assert prelude_crc == binascii.crc32(frame[:8])
    assert struct.unpack(">I", frame[-4:])[0] == binascii.crc32(frame[:-4])
    assert frame[12 + headers_len : -4] == b"xyz"


def test_model_stream_error_is_an_exception_event_with_json_body() -> None:
    [message] = decode(eventstream.model_stream_error("boom", "StreamBroken"))
    assert message.headers[":message-type"] == "exception"
    assert message.headers[":exception-type"] == "ModelStreamError"
    assert json.loads(message.payload) == {"Message": "boom", "ErrorCode": "StreamBroken"}
    assert message.to_response_dict()["status_code"] == 400


def test_internal_stream_failure_is_an_exception_event() -> None:
    [message] = decode(eventstream.internal_stream_failure("oops"))
    assert message.headers[":exception-type"] == "InternalStreamFailure"
    assert json.loads(message.payload) == {"Message": "oops"}


def test_empty_payload_and_unicode_header_values() -> None:
    [message] = decode(eventstream.encode_frame({"ünï": "cödé ✓"}, b""))
    assert message.headers == {"ünï": "cödé ✓"}
    assert message.payload == b""


def test_rejects_what_the_format_cannot_carry() -> None:
    with pytest.raises(ValueError, match="header name"):
        eventstream.encode_frame({"x" * 256: "v"}, b"")
    with pytest.raises(ValueError, match="too long"):
        eventstream.encode_frame({"n": "v" * 70_000}, b"")
    with pytest.raises(ValueError, match="payload exceeds"):
        eventstream.encode_frame({}, bytes(eventstream.MAX_PAYLOAD_BYTES + 1))


@given(
    payloads=st.lists(st.binary(max_size=300), min_size=1, max_size=8),
    cut=st.integers(min_value=1, max_value=50),
)
def test_any_payload_sequence_survives_arbitrary_tcp_splits(
    payloads: list[bytes], cut: int
) -> None:
    wire = b"".join(eventstream.payload_part(p) for p in payloads)
    buffer = EventStreamBuffer()
    decoded: list[bytes] = []
    for start in range(0, len(wire), cut):
        buffer.add_data(wire[start : start + cut])
        decoded.extend(message.payload for message in buffer)
    assert decoded == payloads
