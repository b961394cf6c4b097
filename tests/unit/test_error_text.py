"""Error text is bounded once, in encoded bytes (sagewire.core.error_text), so gRPC trailers stay
far below the 8 KiB a default client accepts, whatever upstream or the caller sent."""

from __future__ import annotations

import pytest

from sagewire.core.error_text import (
    MESSAGE_MAX_BYTES,
    MODEL_MESSAGE_MAX_BYTES,
    bounded,
    clip_encoded,
    clip_utf8,
    encoded_size,
)
from sagewire.core.errors import ErrorKind, FieldViolation, ModelFailure, SagewireError
from sagewire.transports.grpc.status import to_rpc_status
from support import wire_metadata_bytes

TEXTS = ["x" * 9000, "é" * 9000, "错误" * 5000, "🙂" * 3000, "%" * 9000, "\n\t" * 4000]


@pytest.mark.parametrize("text", TEXTS, ids=["ascii", "latin", "cjk", "emoji", "percent", "ctl"])
def test_clip_encoded_counts_percent_encoding_and_cuts_on_a_character(text: str) -> None:
    clipped = clip_encoded(text, MESSAGE_MAX_BYTES)
    assert encoded_size(clipped) <= MESSAGE_MAX_BYTES
    assert encoded_size(clipped) > MESSAGE_MAX_BYTES - 12  # a 4-byte character plus "…"
    assert clipped.endswith("…")
    assert text.startswith(clipped[:-1])


def test_short_text_is_untouched() -> None:
    assert clip_encoded("é" * 100, MESSAGE_MAX_BYTES) == "é" * 100
    assert clip_utf8("abc", 3) == "abc"
    assert clip_utf8("abcd", 3) == "…"


def test_encoded_size_is_grpcs_percent_encoding() -> None:
    assert encoded_size("a b~") == 4
    assert encoded_size("%") == 3
    assert encoded_size("é") == 6  # two UTF-8 bytes, each %XX
    assert encoded_size("\n") == 3


def _worst(text: str) -> SagewireError:
    """Every text field an error has, each far too long."""
    return SagewireError(
        message=text,
        kind=ErrorKind.INVALID_ARGUMENT,
        reason="R" * 500,
        retry_after_s=1.0,
        violations=tuple(FieldViolation(f"f{i}" + text, text) for i in range(20)),
        metadata={f"k{i}" + text[:100]: text for i in range(20)},
        model_failure=ModelFailure(500, text, text),
    )


@pytest.mark.parametrize("text", TEXTS, ids=["ascii", "latin", "cjk", "emoji", "percent", "ctl"])
def test_the_worst_error_fits_well_under_8_kib_of_trailers(text: str) -> None:
    assert wire_metadata_bytes(_worst(text)) <= 6 * 1024


def test_bounded_keeps_what_fits_and_returns_small_errors_unchanged() -> None:
    small = SagewireError("short", ErrorKind.NOT_FOUND, "UNKNOWN_MODEL", metadata={"model": "m"})
    assert bounded(small) is small
    big = bounded(_worst("é" * 9000))
    assert big.kind is ErrorKind.INVALID_ARGUMENT
    assert big.retry_after_s == 1.0
    assert big.model_failure is not None
    assert big.model_failure.original_status_code == 500
    assert len(big.model_failure.original_message.encode()) <= MODEL_MESSAGE_MAX_BYTES
    assert big.violations  # the first ones are kept
    assert big.metadata


def test_converse_in_band_status_is_bounded_too() -> None:
    status = to_rpc_status(SagewireError("错" * 9000, ErrorKind.INTERNAL, "MODEL_STREAM_ERROR"))
    assert encoded_size(status.message) <= MESSAGE_MAX_BYTES
