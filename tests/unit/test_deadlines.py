"""sagewire.core.deadlines.Deadline behaves as asyncio.timeout_at on both event loops sagewire
runs on (asyncio's and uvloop's): every behaviour test runs against both, the reference first.
Nothing here depends on how fast the machine is: blocks that must expire wait on events that
never come, blocks that must not expire have deadlines an hour away."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
import uvloop

from sagewire.core import deadlines
from sagewire.core.deadlines import Deadline

FAR = 3600.0

type Runner = Callable[[Awaitable[None]], None]


def _asyncio(main: Awaitable[None]) -> None:
    asyncio.run(main)  # type: ignore[arg-type]


def _uvloop(main: Awaitable[None]) -> None:
    uvloop.run(main)  # type: ignore[arg-type]


LOOPS = pytest.mark.parametrize("run", [_asyncio, _uvloop], ids=["asyncio", "uvloop"])

type Make = Callable[[float], AbstractAsyncContextManager[Any]]
# The reference first: a test that fails on it tests the wrong thing.
KINDS = pytest.mark.parametrize(
    "make", [asyncio.timeout_at, Deadline], ids=["asyncio.timeout_at", "Deadline"]
)


def _now() -> float:
    return asyncio.get_running_loop().time()


async def _forever() -> None:
    await asyncio.Event().wait()


@KINDS
@LOOPS
def test_a_block_reaching_its_deadline_raises_timeout_error(run: Runner, make: Make) -> None:
    async def main() -> None:
        for when in (_now() - 1.0, _now(), _now() + 0.02):  # past, now, soon
            with pytest.raises(TimeoutError):
                async with make(when):
                    await _forever()
            # The task is not left cancelled: it goes on awaiting normally.
            assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
            await asyncio.sleep(0)

    run(main())


@KINDS
@LOOPS
def test_a_block_ending_in_time_is_never_cancelled_later(run: Runner, make: Make) -> None:
    async def main() -> None:
        async with make(_now() + FAR):
            await asyncio.sleep(0)
        # A later, earlier deadline elsewhere fires while this task goes on: not this task.
        other = asyncio.create_task(_expires_soon(make))
        assert await other == "timed out"
        for _ in range(5):
            await asyncio.sleep(0)
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]

    run(main())


async def _expires_soon(make: Make) -> str:
    try:
        async with make(_now() + 0.01):
            await _forever()
    except TimeoutError:
        return "timed out"
    return "not timed out"


@KINDS
@LOOPS
def test_the_timer_moves_on_to_the_next_deadline_when_the_earliest_ends_first(
    run: Runner, make: Make
) -> None:
    """The single timer is armed for the earliest deadline; that block ends early, so when the
    timer fires it must re-arm for the later one, which then expires."""

    async def main() -> None:
        async with make(_now() + 0.02):
            later = asyncio.create_task(_expires_soon(make))
            await asyncio.sleep(0)  # `later` entered its block: armed for ours, which ends now
        assert await later == "timed out"

    run(main())


@KINDS
@LOOPS
def test_a_cancellation_from_elsewhere_stays_a_cancellation(run: Runner, make: Make) -> None:
    async def cancelled_inside(entered: asyncio.Event) -> None:
        async with make(_now() + FAR):
            entered.set()
            await _forever()

    async def expired_then_cancelled(expired: asyncio.Event) -> None:
        async with make(_now() - 1.0):
            try:
                await _forever()
            except asyncio.CancelledError:  # the deadline's
                expired.set()
                await _forever()  # then someone else's

    async def main() -> None:
        entered = asyncio.Event()
        task = asyncio.create_task(cancelled_inside(entered))
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The deadline came, then someone else cancelled too: theirs wins, as in asyncio.
        expired = asyncio.Event()
        task = asyncio.create_task(expired_then_cancelled(expired))
        await expired.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main())


@KINDS
@LOOPS
def test_nested_blocks_each_answer_for_their_own_deadline(run: Runner, make: Make) -> None:
    async def main() -> None:
        # The inner one expires: only it raises TimeoutError, the outer goes on.
        async with make(_now() + FAR):
            with pytest.raises(TimeoutError):
                async with make(_now() + 0.01):
                    await _forever()
            await asyncio.sleep(0)
        # The outer one expires: the inner lets the cancellation through, the outer converts.
        with pytest.raises(TimeoutError):
            await outer_expires()

    async def outer_expires() -> None:
        async with make(_now() + 0.01):
            try:
                async with make(_now() + FAR):
                    await _forever()
            except TimeoutError:
                pytest.fail("the inner block's deadline did not come")

    run(main())


@KINDS
@LOOPS
def test_a_timeout_error_of_the_block_itself_is_not_swallowed_or_converted(
    run: Runner, make: Make
) -> None:
    async def main() -> None:
        with pytest.raises(TimeoutError, match="the block's own"):
            async with make(_now() + FAR):
                raise TimeoutError("the block's own")
        with pytest.raises(ValueError, match="boom"):
            await fails_on_expiry()
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]

    async def fails_on_expiry() -> None:
        async with make(_now() - 1.0):
            try:
                await _forever()
            except asyncio.CancelledError:  # the deadline came: the block fails its own way
                raise ValueError("boom") from None

    run(main())


@LOOPS
def test_blocks_ending_out_of_order_do_not_pile_up(run: Runner) -> None:
    """One long block in flight (the earliest deadline) and many short ones after it: the
    ended entries are swept, so the heap stays near the blocks in flight."""

    async def main() -> None:
        async with Deadline(_now() + FAR):
            for _ in range(2000):
                async with Deadline(_now() + FAR):
                    pass
            timers = deadlines._TIMERS[asyncio.get_running_loop()]
            assert len(timers._heap) <= 2 * deadlines._SWEEP_AT
        assert timers._heap == []  # the long one ended too: nothing left

    run(main())


def test_a_deadline_is_used_inside_a_task() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        refused: asyncio.Future[str] = loop.create_future()

        def outside_any_task() -> None:
            try:
                Deadline(0.0).__aenter__().send(None)
            except RuntimeError as error:
                refused.set_result(str(error))

        loop.call_soon(outside_any_task)
        assert "inside a task" in await refused

    asyncio.run(main())
