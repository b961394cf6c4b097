"""Re-framing streamed bytes into records: newline-terminated lines, or Server-Sent Events.

SageMaker cuts a response stream into PayloadParts at arbitrary byte boundaries: one record can
span parts and one part can hold several records. `LineFramer` restores record boundaries with a
bounded buffer, so a model that never sends a newline cannot grow memory without limit.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from sagewire.config.settings import StreamFraming
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
    """Records out of `parts`. The bytes after the last newline come out as a last record
    without one, at the end and also when `parts` fails: nothing received is held back from
    the caller before the failure is reported."""
    framer = LineFramer(max_record_bytes)
    upstream = aiter(parts)
    while True:
        try:
            part = await anext(upstream)
        except StopAsyncIteration:
            break
        except SagewireError:
            tail = framer.flush()
            if tail is not None:
                yield tail
            raise
        for record in framer.feed(part):
            yield record
    tail = framer.flush()
    if tail is not None:
        yield tail


# -- Server-Sent Events (text/event-stream: TGI, vLLM and the LMI containers) -----------------

_EOL = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"
DONE = b"[DONE]"


class SseFramer:
    """Feed chunks of a `text/event-stream`, get each event's data out (bytes).

    Follows the WHATWG HTML rules for parsing an event stream, on bytes: lines end in CRLF, LF
    or CR (a CRLF split across parts counts once); a leading BOM is dropped; lines starting
    with `:` are comments; an event's `data` lines are joined with LF, and the event is
    dispatched at a blank line when it has any. Working on bytes keeps multi-byte UTF-8
    characters whole however the parts are cut: CR and LF never occur inside one. Other fields
    (`event`, `id`, `retry`) are not relayed. An event whose data is exactly `[DONE]` (the
    OpenAI-style end marker of vLLM and LMI) is dropped: the end of the stream says the same.
    Unlike a browser, an event cut off by the end of the stream is still delivered: nothing
    received is lost.
    """

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> None:
        self._max = max_event_bytes
        self._line = b""
        self._data: list[bytes] = []
        self._size = 0
        self._skip_lf = False  # the last part ended in CR: a LF opening the next belongs to it
        self._started = False

    def feed(self, chunk: bytes) -> list[bytes]:
        if self._skip_lf and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._skip_lf = False
        buffer = self._line + chunk
        if not self._started:
            if _BOM.startswith(buffer):  # too short to tell yet
                self._line = buffer
                return []
            self._started = True
            buffer = buffer.removeprefix(_BOM)
        events: list[bytes] = []
        start = 0
        for end in _EOL.finditer(buffer):
            self._take_line(buffer[start : end.start()], events)
            start = end.end()
        self._line = buffer[start:]
        self._skip_lf = buffer.endswith(b"\r")
        if len(self._line) > self._max:
            raise _too_large(self._max)
        return events

    def flush(self) -> list[bytes]:
        """What the end of the stream completes: a last line without its line end, an event
        without its blank line."""
        events: list[bytes] = []
        if self._line:
            self._take_line(self._line, events)
            self._line = b""
        self._take_line(b"", events)
        return events

    def _take_line(self, line: bytes, events: list[bytes]) -> None:
        if not line:
            if self._data:
                data = b"\n".join(self._data)
                self._data, self._size = [], 0
                if data != DONE:
                    events.append(data)
            return
        if line.startswith(b":"):
            return  # a comment, e.g. a keep-alive
        name, colon, value = line.partition(b":")
        if name != b"data":
            return
        if colon and value.startswith(b" "):
            value = value[1:]
        self._size += len(value) + 1
        if self._size > self._max:
            raise _too_large(self._max)
        self._data.append(value)


async def frame_sse(
    parts: AsyncIterator[bytes], max_event_bytes: int = DEFAULT_MAX_RECORD_BYTES
) -> AsyncIterator[bytes]:
    framer = SseFramer(max_event_bytes)
    async for part in parts:
        for event in framer.feed(part):
            yield event
    for event in framer.flush():
        yield event


def frame(parts: AsyncIterator[bytes], framing: StreamFraming) -> AsyncIterator[bytes]:
    """`parts` cut into messages as `framing` says (raw: as they are)."""
    if framing is StreamFraming.LINES:
        return frame_lines(parts)
    if framing is StreamFraming.SSE:
        return frame_sse(parts)
    return parts


def frame_whole(body: bytes, framing: StreamFraming) -> list[bytes]:
    """A whole answer cut into records as `framing` says (lines or sse)."""
    if framing is StreamFraming.SSE:
        sse = SseFramer()
        return [*sse.feed(body), *sse.flush()]
    lines = LineFramer()
    tail = [*lines.feed(body)]
    rest = lines.flush()
    return [*tail, rest] if rest is not None else tail


def _too_large(limit: int) -> SagewireError:
    return SagewireError(
        message=f"the model sent a Server-Sent Event (or line) longer than {limit} bytes; use "
        "raw framing for this model",
        kind=ErrorKind.RESOURCE_EXHAUSTED,
        reason="RECORD_TOO_LARGE",
    )
