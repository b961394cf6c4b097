"""Per-endpoint counters, so tests can see what happened on the server side of the wire.

Why: some promises cannot be checked from the client alone, e.g. "a caller who disconnects
stops the upstream stream": after a disconnect, ``stream_parts_sent`` must stop growing and
``streams_aborted`` must count it. Counters are plain ints mutated on the event loop.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum


class StreamOutcome(StrEnum):
    COMPLETED = "completed"  # every part sent, stream closed normally
    ABORTED = "aborted"  # the client went away (or the request was cancelled) mid-stream
    FAILED = "failed"  # ended with an exception event (injected or from the model)
    DROPPED = "dropped"  # the emulator cut the TCP connection (drop_after_parts)


@dataclass
class EndpointStats:
    invocations: int = 0  # requests that reached the endpoint, both operations, errors included
    errors: int = 0  # HTTP error answers (injected faults, model errors, validation)
    invocations_cancelled: int = 0  # real-time calls whose client went away before the answer
    active_invocations: int = 0  # real-time calls in progress now (admitted, not yet answered)
    faults_injected: int = 0  # calls a fault answered: cold, error_rate/error, connection_drop
    cold_answers: int = 0  # ... of them ModelNotReady from cold_for_s / cold_for_calls
    connections_dropped: int = 0  # ... of them connection_drop (no answer at all)
    stream_parts_sent: int = 0
    streams_started: int = 0  # 200 + event-stream headers sent
    streams_completed: int = 0
    streams_aborted: int = 0
    streams_failed: int = 0
    streams_dropped: int = 0
    active_streams: int = 0
    # InvokeEndpointWithBidirectionalStream (the HTTP/2 listener)
    bidi_parts_received: int = 0
    bidi_parts_sent: int = 0
    bidi_streams_started: int = 0  # 200 + event-stream headers sent
    bidi_streams_completed: int = 0  # the model finished (after or before the client's input)
    bidi_streams_aborted: int = 0  # the client reset the stream or went away
    bidi_streams_failed: int = 0  # ended with an exception event
    bidi_streams_dropped: int = 0  # the emulator cut the connection (drop_after_parts)
    active_bidi_streams: int = 0

    def finish_bidi(self, outcome: StreamOutcome) -> None:
        self.active_bidi_streams -= 1
        match outcome:
            case StreamOutcome.COMPLETED:
                self.bidi_streams_completed += 1
            case StreamOutcome.ABORTED:
                self.bidi_streams_aborted += 1
            case StreamOutcome.FAILED:
                self.bidi_streams_failed += 1
            case StreamOutcome.DROPPED:
                self.bidi_streams_dropped += 1

    def finish_stream(self, outcome: StreamOutcome) -> None:
        self.active_streams -= 1
        match outcome:
            case StreamOutcome.COMPLETED:
                self.streams_completed += 1
            case StreamOutcome.ABORTED:
                self.streams_aborted += 1
            case StreamOutcome.FAILED:
                self.streams_failed += 1
            case StreamOutcome.DROPPED:
                self.streams_dropped += 1

    def as_dict(self) -> dict[str, int]:
        return asdict(self)
