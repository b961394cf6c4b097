"""Re-framing streamed bytes into newline-terminated records.

SageMaker cuts a response stream into PayloadParts at arbitrary byte boundaries: one record can
span parts and one part can hold several records. `LineFramer` restores record boundaries with a
bounded buffer, so a model that never sends a newline cannot grow memory without limit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from sagewire.core.errors import ErrorKind, SagewireError

DEFAULT_MAX_RECORD_BYTES = 6 * 1024 * 1024


class LineFramer:
    """Feed chunks in, get whole records (each ending in b"\\n") out."""

    def __init__(self, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> None:
        self._pending = bytearray()
        self._max = max_record_bytes

    def feed(self, chunk: bytes) -> list[bytes]:
        if b"\n" not in chunk:
            self._pending += chunk
            self._check()
            return []
        self._pending += chunk
        *records, rest = bytes(self._pending).split(b"\n")
        self._pending = bytearray(rest)
        self._check()
        return [record + b"\n" for record in records]

    def flush(self) -> bytes | None:
        """The trailing record without a newline, if the stream ended mid-record."""
        if not self._pending:
            return None
        record = bytes(self._pending)
        self._pending.clear()
        return record

    def _check(self) -> None:
        if len(self._pending) > self._max:
            raise SagewireError(
                message=f"the model sent a record longer than {self._max} bytes without a "
                "newline; use raw framing for this model",
                kind=ErrorKind.RESOURCE_EXHAUSTED,
                reason="RECORD_TOO_LARGE",
            )


async def frame_lines(
    parts: AsyncIterator[bytes], max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
) -> AsyncIterator[bytes]:
    framer = LineFramer(max_record_bytes)
    async for part in parts:
        for record in framer.feed(part):
            yield record
    tail = framer.flush()
    if tail is not None:
        yield tail
