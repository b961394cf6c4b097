"""The request bodies every contender sends: the same bytes, so only the path differs."""

from __future__ import annotations

import json

_PREFIX = b'{"inputs":"'
_SUFFIX = b'"}'


def json_payload(size: int) -> bytes:
    """A JSON object of exactly `size` bytes, shaped like a typical model request."""
    filler = size - len(_PREFIX) - len(_SUFFIX)
    if filler < 0:
        raise ValueError(f"a JSON payload needs at least {len(_PREFIX) + len(_SUFFIX)} bytes")
    return _PREFIX + b"a" * filler + _SUFFIX


def tokens_request(words: int) -> bytes:
    """A `tokens` model request that streams `words` short JSON lines, at once."""
    return json.dumps({"text": " ".join(["tok"] * words)}).encode()


def firehose_request(total_bytes: int, part_size: int) -> bytes:
    """A `firehose` model request: `total_bytes` in parts of `part_size`, as fast as read."""
    return json.dumps({"bytes": total_bytes, "part_size": part_size}).encode()


def parts_in(total_bytes: int, part_size: int) -> int:
    """How many PayloadParts a firehose request produces."""
    return -(-total_bytes // part_size)
