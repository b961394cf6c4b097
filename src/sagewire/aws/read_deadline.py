"""A read timeout on one loop timer per connection, for both of the lean path's HTTP clients
(sagewire.aws.lean_http's aiohttp protocol and sagewire.aws.lean_http1_connection).

Why not a timer per chunk, as aiohttp's `sock_read` does: making and cancelling a loop timer
costs ~5 µs under uvloop, twice per call or more. Here the deadline is a number moved forward on
each chunk (`arm`); the one timer, when it fires early, re-arms for the moved deadline, and only
silence for the whole timeout calls `expired`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class ReadDeadline:
    """`arm(timeout_s)` when reading starts and on each chunk (seconds of silence allowed from
    now), `stop()` when reading stops, `close()` with the connection. `expired()` is called once
    per silence that lasted the timeout (reading is stopped by then)."""

    __slots__ = ("_by", "_expired", "_loop", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop, expired: Callable[[], None]) -> None:
        self._loop = loop
        self._expired = expired
        self._by: float | None = None  # the loop time by which data must come; None: not reading
        self._timer: asyncio.TimerHandle | None = None

    @property
    def reading(self) -> bool:
        return self._by is not None

    def arm(self, timeout_s: float) -> None:
        self._by = by = self._loop.time() + timeout_s
        if self._timer is None:
            self._timer = self._loop.call_at(by, self._check, by)

    def stop(self) -> None:
        self._by = None

    def close(self) -> None:
        self._by = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self, armed_for: float) -> None:
        self._timer = None
        by = self._by
        if by is None:
            return
        if by <= armed_for or by <= self._loop.time():  # no data since: the deadline came
            self._by = None
            self._expired()
        else:
            self._timer = self._loop.call_at(by, self._check, by)
