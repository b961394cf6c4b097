"""Work that waits and is done in batches: observed calls, metric updates, log lines; and the
sums per series that metric updates wait in (`Pending`, `PendingHistogram`).

A `Batch` holds items until `after_s` passed since the first of them (a timer on the event loop
running when it arrived), until `limit` wait, or until someone calls `flush()`; then it hands
them all, in order, to its `flush` function. The timer runs in an empty contextvars context,
never in that of the code that queued an item. Observing a call runs between the rest of the
call's work, with the processor's caches full of that, where logging and prometheus-client cost
several times what they cost in a batch (docs/benchmarks.md, observability).

Own code because asyncio has no "call later, unless already due" with a size bound, and the
three batchers sagewire had (access records, metric updates, log lines) each got one edge of it
wrong: a timer kept after a size-triggered flush, or a timer left "due" on an event loop that
had closed, so nothing was written until the next size-triggered flush.
"""

from __future__ import annotations

import asyncio
import contextvars
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

_running_loop = asyncio._get_running_loop  # no exception off a loop: None (C, cheap)


class Batch[T]:
    """Items waiting for `flush(items)`. Not thread-safe: the caller holds a lock, or uses one
    thread (an event loop's). `timer_calls` is what the timer runs (default `self.flush`; a
    caller that locks passes its own locked flush)."""

    __slots__ = ("_after_s", "_flush", "_limit", "_loop", "_timer", "_timer_calls", "items")

    def __init__(
        self,
        flush: Callable[[list[T]], None],
        after_s: float,
        limit: int,
        timer_calls: Callable[[], None] | None = None,
    ) -> None:
        self._flush = flush
        self._after_s = after_s
        self._limit = limit
        self._timer_calls = timer_calls or self.flush
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.items: list[T] = []

    def add(self, item: T) -> bool:
        """Queue `item`. False when it waits with nothing due to flush it (no event loop runs
        in this thread): the caller flushes, or hands the batch to a thread of its own."""
        items = self.items
        items.append(item)
        if len(items) >= self._limit:
            self.flush()
            return True
        if self._timer is not None and self._loop is _running_loop():
            return True
        return self._schedule()

    def _schedule(self) -> bool:
        # A timer on another loop (closed, or not this thread's) would never run here.
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        loop = _running_loop()
        if loop is None:
            return False
        self._loop = loop
        # In a context of its own: call_later would copy the one of whoever queued the first
        # item (a call, with its span current), and everything the flush does would pass as
        # that call's (an OTel measurement's exemplar of every call in the batch, a log line's
        # trace id).
        self._timer = loop.call_later(
            self._after_s, self._timer_calls, context=contextvars.Context()
        )
        return True

    def flush(self) -> None:
        """Hand every waiting item to the flush function now (nothing when none wait)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        items = self.items
        if items:
            self.items = []
            self._flush(items)

    def here(self) -> bool:
        """Whether what waits was queued on the event loop running in this thread (or off any
        loop): flushing it from here races with no other thread."""
        return self._loop is None or self._loop is _running_loop()


class Pending:
    """A counter's or gauge's changes, summed until the next batch is applied (the module doc):
    `inc`/`dec` cost an addition, not a lock. In multiprocess mode `Metrics.pending` gives the
    instrument's child itself, which has the same methods."""

    __slots__ = ("amount", "child")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.amount: float = 0

    def inc(self, amount: float = 1) -> None:
        self.amount += amount

    def dec(self, amount: float = 1) -> None:
        self.amount -= amount

    def apply(self) -> None:
        amount = self.amount
        if amount:
            self.amount = 0
            self.child.inc(amount)


class PendingHistogram:
    """A histogram child's observations, counted per bucket until the next batch is applied.

    Applied through the child's own per-bucket values (`_buckets`, `_sum`: prometheus-client
    keeps non-cumulative counts there and sums them when collected; pinned in
    requirements/runtime.txt, and tests/unit/test_observability_batches.py checks the exposition
    against `observe`), since its public API adds one observation at a time."""

    __slots__ = ("_bounds", "_counts", "_sum", "child")

    def __init__(self, child: Any) -> None:
        self.child = child
        self._bounds: list[float] = list(child._upper_bounds)
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        # The first bucket whose upper bound is >= value, as Histogram.observe picks it.
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value

    def apply(self) -> None:
        counts = self._counts
        if not any(counts):
            return
        buckets = self.child._buckets
        for index, count in enumerate(counts):
            if count:
                buckets[index].inc(count)
                counts[index] = 0
        self.child._sum.inc(self._sum)
        self._sum = 0.0
