"""How much text an error may carry to a caller: the one place that bounds it, in encoded bytes.

Why: error text comes from upstream (SageMaker's messages, the model container's answer, stream
errors) and from callers (model names, option values quoted back), and can be any length. gRPC
carries it in trailers, and peers refuse trailers past 8 KiB by default (C-core's
`grpc.max_metadata_size`): the caller then sees RESOURCE_EXHAUSTED "received metadata size
exceeds hard limit" and loses the real status. `grpc-message` is percent-encoded (every byte
outside printable ASCII, and `%`, takes 3 bytes), and `grpc-status-details-bin` carries the
message again plus every detail, base64-encoded (4 bytes per 3).

The bounds, applied to every error by `bounded` before any transport encodes it (the gRPC
status table, Converse's in-band turn errors, and the REST bridge's error bodies alike):
- the message: at most `MESSAGE_MAX_BYTES` once percent-encoded;
- ErrorInfo metadata: each value at most `VALUE_MAX_BYTES`, all of them `METADATA_MAX_BYTES`;
- BadRequest violations: each description at most `DESCRIPTION_MAX_BYTES`, all of them
  `VIOLATIONS_MAX_BYTES`;
- the model's own message (ModelErrorDetail): `MODEL_MESSAGE_MAX_BYTES`; its log stream ARN
  `VALUE_MAX_BYTES` (UTF-8).
Together: grpc-message ≤ 1 KiB, details ≤ about 4.5 KiB of base64, trailers ≤ about 6 KiB
(tests/unit/test_error_text.py builds the worst case and measures it). Cut text ends in "…".
"""

from __future__ import annotations

from dataclasses import replace

from sagewire.core.errors import FieldViolation, ModelFailure, SagewireError

MESSAGE_MAX_BYTES = 1024
VALUE_MAX_BYTES = 256
METADATA_MAX_BYTES = 512
DESCRIPTION_MAX_BYTES = 256
VIOLATIONS_MAX_BYTES = 512
MODEL_MESSAGE_MAX_BYTES = 1024
ELLIPSIS = "…"


def _byte_cost(byte: int) -> int:
    """Bytes one UTF-8 byte takes in grpc-message (gRPC's percent-encoding)."""
    return 1 if 0x20 <= byte <= 0x7E and byte != 0x25 else 3


_COST = bytes(_byte_cost(b) for b in range(256))


def encoded_size(text: str) -> int:
    """`text`'s size in bytes once UTF-8 and percent-encoded as in grpc-message."""
    return sum(_COST[b] for b in text.encode())


def clip_encoded(text: str, limit: int) -> str:
    """`text`, cut on a character boundary so that it percent-encodes to at most `limit`
    bytes (the cut marked with "…", counted in the limit)."""
    if len(text) * 9 <= limit or encoded_size(text) <= limit:  # 9: a 3-byte char, encoded
        return text
    budget = limit - encoded_size(ELLIPSIS)
    used = 0
    for index, char in enumerate(text):
        used += sum(_COST[b] for b in char.encode())
        if used > budget:
            return text[:index] + ELLIPSIS
    return text  # unreachable: the whole text was over the limit


def clip_utf8(text: str, limit: int) -> str:
    """`text` cut to at most `limit` UTF-8 bytes on a character boundary, the cut marked with
    "…" (counted in the limit)."""
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[: max(0, limit - len(ELLIPSIS.encode()))].decode(errors="ignore") + ELLIPSIS


def _metadata(metadata: dict[str, str]) -> dict[str, str]:
    bounded: dict[str, str] = {}
    left = METADATA_MAX_BYTES
    for key, value in metadata.items():
        entry_key = clip_utf8(key, 64)
        entry_value = clip_utf8(value, min(VALUE_MAX_BYTES, max(left - len(entry_key), 0)))
        left -= len(entry_key.encode()) + len(entry_value.encode())
        if left < 0:
            break
        bounded[entry_key] = entry_value
    return bounded


def _violations(violations: tuple[FieldViolation, ...]) -> tuple[FieldViolation, ...]:
    bounded: list[FieldViolation] = []
    left = VIOLATIONS_MAX_BYTES
    for violation in violations:
        field = clip_utf8(violation.field, 128)
        description = clip_utf8(
            violation.description, min(DESCRIPTION_MAX_BYTES, max(left - len(field), 0))
        )
        left -= len(field.encode()) + len(description.encode())
        if left < 0:
            break
        bounded.append(FieldViolation(field, description))
    return tuple(bounded)


def _model_failure(failure: ModelFailure | None) -> ModelFailure | None:
    if failure is None:
        return None
    return replace(
        failure,
        original_message=clip_utf8(failure.original_message, MODEL_MESSAGE_MAX_BYTES),
        log_stream_arn=clip_utf8(failure.log_stream_arn, VALUE_MAX_BYTES),
    )


def bounded(error: SagewireError) -> SagewireError:
    """`error` with every text it carries within the bounds above (itself when it already is)."""
    clipped = replace(
        error,
        message=clip_encoded(error.message, MESSAGE_MAX_BYTES),
        reason=clip_utf8(error.reason, 64),
        metadata=_metadata(error.metadata),
        violations=_violations(error.violations),
        model_failure=_model_failure(error.model_failure),
    )
    return error if clipped == error else clipped
