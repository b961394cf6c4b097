"""A call's deadline: `asyncio.timeout`'s behaviour without a loop timer per call.

Why our own: every `asyncio.timeout()` schedules a timer on the event loop and cancels it again
when the block ends, and under uvloop each one is a libuv timer made, started, stopped and
closed: ~5 µs of CPU on every call (`python -m bench.ab`), although a call almost never reaches
its deadline. Here each event loop keeps ONE timer, armed for the earliest deadline among the
blocks in flight. A block that ends before its deadline only marks its entry (dropped once it
is the earliest, or in a periodic sweep); when the timer fires it expires what is due and
re-arms for the earliest deadline left. With a route's fixed timeout, deadlines arrive in
order, so the timer is re-armed about once per timeout period instead of once per call.

A block that reaches its deadline behaves exactly as under asyncio.timeout (Python 3.12's
asyncio/timeouts.py): its task is cancelled, and leaving the block turns that CancelledError
into TimeoutError unless another cancellation of the task is pending. The timer fires on the
loop's clock as asyncio's timers do; a deadline already past expires on the next loop
iteration.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import weakref
from types import TracebackType

# A sweep drops ended entries once they are this many and over half of the heap: the heap
# stays within about twice the blocks in flight whatever order they end in.
_SWEEP_AT = 64


class _Timers:
    """One event loop's deadlines and its single timer."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._heap: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()  # ties between equal deadlines: first entered first
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self._armed_for = math.inf
        self._ended = 0  # entries of blocks that ended, still in the heap

    def add(self, deadline: Deadline) -> None:
        when = deadline.when
        heapq.heappush(self._heap, (when, next(self._order), deadline))
        if when < self._armed_for:
            self._arm(when)

    def ended(self) -> None:
        """A queued block ended before its deadline: drop it (and any before it) when it is
        the earliest, else count it for the sweep."""
        heap = self._heap
        self._ended += 1
        while heap and heap[0][2].done:
            heapq.heappop(heap)
            self._ended -= 1
        if self._ended >= _SWEEP_AT and self._ended * 2 > len(heap):
            self._heap = [entry for entry in heap if not entry[2].done]
            heapq.heapify(self._heap)
            self._ended = 0

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        loop = self._loop
        self._timer = (
            loop.call_soon(self._fire, when)
            if when <= loop.time()
            else loop.call_at(when, self._fire, when)
        )
        self._armed_for = when

    def _fire(self, armed_for: float) -> None:
        self._timer = None
        self._armed_for = math.inf
        # Everything due by the time the timer was armed for (the loop may run a timer a
        # clock tick early, as it would asyncio.timeout's own) or by now.
        due = max(armed_for, self._loop.time())
        heap = self._heap
        while heap and (heap[0][2].done or heap[0][0] <= due):
            deadline = heapq.heappop(heap)[2]
            if deadline.done:
                self._ended -= 1
            else:
                deadline.expire()
        if heap:
            self._arm(heap[0][0])


_TIMERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Timers] = weakref.WeakKeyDictionary()


class Deadline:
    """`async with Deadline(when):` bounds the block by the loop time `when`, as
    `asyncio.timeout_at(when)` does; TimeoutError when it is reached. One use only."""

    __slots__ = ("_cancelling", "_expired", "_task", "_timers", "done", "when")

    def __init__(self, when: float) -> None:
        self.when = when
        self.done = False  # the block ended, or its deadline came (out of the heap then)
        self._expired = False

    async def __aenter__(self) -> Deadline:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("Deadline should be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        timers = _TIMERS.get(loop)
        if timers is None:
            timers = _TIMERS[loop] = _Timers(loop)
        self._timers = timers
        timers.add(self)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.done:  # ended before its deadline
            self.done = True
            self._timers.ended()
            return
        if (
            self._expired
            and self._task.uncancel() <= self._cancelling
            and kind is not None
            and issubclass(kind, asyncio.CancelledError)
        ):
            raise TimeoutError from error

    def expired(self) -> bool:
        """Whether the deadline came while the block ran (asyncio.Timeout.expired)."""
        return self._expired

    def expire(self) -> None:
        """The deadline came while the block runs: cancel its task (the timer's callback)."""
        self.done = self._expired = True
        self._task.cancel()
