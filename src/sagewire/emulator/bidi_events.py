"""PayloadPart event streams of InvokeEndpointWithBidirectionalStream, both directions.

Why: on the bidirectional stream the client wraps every event in a signed envelope (an
event-stream message with ``:date`` and ``:chunk-signature`` headers whose payload is the real
event) and ends its input with an empty signed envelope. The emulator unwraps without verifying
signatures, as it does for SigV4 elsewhere. botocore's ``EventStreamBuffer`` parses frames
incrementally (every header type, CRCs checked); outbound frames reuse ``eventstream``.

A PayloadPart carries its bytes as the payload and ``DataType`` (UTF8 | BINARY),
``CompletionState`` (PARTIAL | COMPLETE) and ``P`` (padding) as string headers.
"""

from __future__ import annotations

from dataclasses import dataclass

from botocore.eventstream import EventStreamBuffer, EventStreamMessage, ParserError

from sagewire.emulator import eventstream

SIGNATURE_HEADER = ":chunk-signature"
UTF8 = "UTF8"
BINARY = "BINARY"
PARTIAL = "PARTIAL"
COMPLETE = "COMPLETE"


@dataclass(frozen=True)
class Part:
    """One PayloadPart: bytes plus the optional DataType and CompletionState headers."""

    data: bytes
    data_type: str | None = None
    completion_state: str | None = None

    @property
    def complete(self) -> bool:
        return self.completion_state == COMPLETE


class InputEnded:
    """The client's empty signed envelope: no more input on this stream."""


class BadInput(ValueError):
    """Bytes that are not a valid event stream (bad CRC, truncated frame, wrong event)."""


def _string(message: EventStreamMessage, name: str) -> str | None:
    value = message.headers.get(name)
    return value if isinstance(value, str) else None


def _event(message: EventStreamMessage) -> Part | None:
    """The PayloadPart in ``message``; None for events sagewire need not understand."""
    if _string(message, ":message-type") != "event":
        raise BadInput(f"unexpected input message type {_string(message, ':message-type')!r}")
    if _string(message, ":event-type") != "PayloadPart":
        return None  # SageMaker ignores unknown event types the SDK may add
    return Part(
        data=bytes(message.payload),
        data_type=_string(message, "DataType"),
        completion_state=_string(message, "CompletionState"),
    )


class InputDecoder:
    """Feed request DATA as it arrives; get whole PayloadParts (and the end marker) out."""

    def __init__(self) -> None:
        self._frames = EventStreamBuffer()

    def feed(self, data: bytes) -> list[Part | InputEnded]:
        self._frames.add_data(data)
        out: list[Part | InputEnded] = []
        try:
            for frame in self._frames:
                message = frame
                if SIGNATURE_HEADER in frame.headers:
                    if not frame.payload:
                        out.append(InputEnded())
                        continue
                    inner = EventStreamBuffer()
                    inner.add_data(frame.payload)
                    messages = list(inner)
                    if len(messages) != 1:
                        raise BadInput("a signed envelope must hold exactly one event")
                    message = messages[0]
                part = _event(message)
                if part is not None:
                    out.append(part)
        except ParserError as exc:
            raise BadInput(f"input is not a valid event stream: {type(exc).__name__}") from None
        return out


def encode_part(part: Part) -> bytes:
    """A response ``PayloadPart`` event frame."""
    headers = {
        ":event-type": "PayloadPart",
        ":content-type": "application/octet-stream",
        ":message-type": "event",
    }
    if part.data_type is not None:
        headers["DataType"] = part.data_type
    if part.completion_state is not None:
        headers["CompletionState"] = part.completion_state
    return eventstream.encode_frame(headers, part.data)
