"""Converse on `bidi` routes: the client's turns <-> the parts of one SageMaker HTTP/2
bidirectional stream (InvokeEndpointWithBidirectionalStream), for `ConverseSession`.

Input. Every `turn` message is one part, sent upstream as it arrives: `text` and `json` as
UTF8, `body` as BINARY, CompletionState PARTIAL when the message says `partial`. Consecutive
parts with the same turn_id make one turn; its first part without `partial` completes the turn's
input. Only then may a new turn_id start the next turn (the session refuses it before).

Output. SageMaker's stream carries no ids, so which input a part answers is not on the wire.
The rule: turns are answered in the order they started. Each output part is tagged with the
oldest turn whose answer is still open; a part the model marks COMPLETE closes that answer, and
the turn's `turn_end` follows it. Output while no answer is open (before the first turn, or
after the model completed all of them) carries an empty turn_id. When the model ends the stream,
every open turn gets its `turn_end`.

Why this rule and not "tag with the most recent input part": it does not depend on timing. A
client that sends its next part before the last echo came back (grpcurl sends all of stdin at
once) still sees every answer under the turn it belongs to, as long as the model closes each
answer with one COMPLETE part (as `bidi-echo` does). The cost: a model that never marks COMPLETE
has all its output tagged with the first turn, and turns end only with the stream.

Output chunks take a credit of the session's chunk semaphore before they are queued, so a client
that does not read stops this relay from taking more parts off the stream.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from sagewire.core.converse_events import Outbox, Turn, TurnChunk, TurnEnded
from sagewire.core.ports import BidiStreamPort
from sagewire.core.types import BidiPart
from sagewire.observability import signals


@dataclass(eq=False)
class _Answer:
    """A turn whose answer is still open, and what was relayed for it so far."""

    turn_id: str
    chunks: int = 0
    size: int = 0


class BidiTurns:
    """The open stream of one Converse on a bidi route.

    The session's reader task calls `send` and `close_input` (one at a time, in order); a task of
    its own runs `relay_output` until the model ends the stream or it fails.
    """

    def __init__(
        self,
        stream: BidiStreamPort,
        outbox: Outbox,
        credits: asyncio.Semaphore,
        touch: Callable[[], None],
    ) -> None:
        self._stream = stream
        self._outbox = outbox
        self._credits = credits
        self._touch = touch  # the model's output counts as activity for the idle timeout
        self._answers: deque[_Answer] = deque()  # oldest first
        self._input_turn = ""  # the turn whose input is still PARTIAL
        self.variant = ""
        self.input_closed = False
        self.output_done = False

    async def start(self) -> None:
        """Wait for SageMaker's response headers (connection, TLS and HTTP errors raise here)."""
        self.variant = (await self._stream.start()).invoked_variant

    @property
    def input_turn(self) -> str:
        """The turn whose last part was partial (more parts must follow), or ""."""
        return self._input_turn

    def continues(self, turn_id: str) -> bool:
        """Whether a part with `turn_id` belongs to the turn whose input is still partial."""
        return bool(turn_id) and turn_id == self._input_turn

    async def send(self, turn: Turn) -> None:
        if not self.continues(turn.turn_id):
            # Registered before the part goes out, so no answer to it can come back untagged.
            self._answers.append(_Answer(turn.turn_id))
        self._input_turn = turn.turn_id if turn.partial else ""
        await self._stream.send(BidiPart(turn.body, turn.data_type, turn.partial))

    async def close_input(self) -> None:
        """Half-close upstream: the model's remaining output keeps flowing."""
        if not self.input_closed:
            self.input_closed = True
            await self._stream.close_input()

    async def relay_output(self) -> None:
        """Relay the model's parts until it ends the stream; raises what ends it otherwise."""
        while (part := await self._stream.receive()) is not None:
            self._touch()
            await self._credits.acquire()
            self._relay(part)
            signals.parts_relayed()
        self.output_done = True
        while self._answers:
            self._end()
        self._outbox.put_nowait((None, False))  # wake the sender: the session is done

    def _relay(self, part: BidiPart) -> None:
        answer = self._answers[0] if self._answers else None
        chunk = TurnChunk(
            turn_id=answer.turn_id if answer else "",
            body=part.data,
            record=part.data_type == "UTF8",
            data_type=part.data_type,
            partial=part.partial,
        )
        self._outbox.put_nowait((chunk, True))
        if answer is None:
            return
        answer.chunks += 1
        answer.size += len(part.data)
        if not part.partial:
            self._end()

    def _end(self) -> None:
        # No credit: at most one per relayed chunk or per admitted turn, both bounded.
        answer = self._answers.popleft()
        ended = TurnEnded(answer.turn_id, self.variant, answer.chunks, answer.size)
        self._outbox.put_nowait((ended, False))
