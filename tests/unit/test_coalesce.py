"""sagewire.core.coalesce: what is ready is joined, what must be waited for is not."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from sagewire.core.coalesce import coalesce
from sagewire.core.errors import ErrorKind, SagewireError


async def _parts(*batches: list[bytes], fail: bool = False) -> AsyncIterator[bytes]:
    """Each batch's parts at once (no await between them); a real wait between batches."""
    for batch in batches:
        await asyncio.sleep(0.001)
        for part in batch:
            yield part
    if fail:
        raise SagewireError(message="cut", kind=ErrorKind.UNAVAILABLE, reason="STREAM_BROKEN")


async def _all(parts: AsyncIterator[bytes], bound: int) -> list[bytes]:
    return [message async for message in coalesce(parts, bound)]


async def test_ready_parts_are_joined_and_waits_split_messages() -> None:
    got = await _all(_parts([b"a"], [b"b", b"c", b"d"], [b"e"]), 1024)
    # "a" is the first: sent alone. b arrives after a wait, c and d are ready with it.
    assert got == [b"a", b"bcd", b"e"]


async def test_the_bound_is_kept_and_a_large_part_is_never_split() -> None:
    got = await _all(_parts([b"aa", b"bb", b"cc", b"dddddd", b"e"]), 4)
    assert got == [b"aabb", b"cc", b"dddddd", b"e"]
    assert b"".join(got) == b"aabbccdddddde"


async def test_bound_zero_relays_each_part() -> None:
    got = await _all(_parts([b"a", b"b"], [b"c"]), 0)
    assert got == [b"a", b"b", b"c"]


async def test_a_failure_comes_after_the_bytes_received_before_it() -> None:
    messages = coalesce(_parts([b"a", b"b"], fail=True), 1024)
    assert await anext(messages) == b"ab"
    with pytest.raises(SagewireError) as caught:
        await anext(messages)
    assert caught.value.reason == "STREAM_BROKEN"


async def test_closing_early_cancels_the_read_in_flight() -> None:
    started = asyncio.Event()
    finished: list[str] = []

    async def slow() -> AsyncIterator[bytes]:
        try:
            yield b"a"
            started.set()
            await asyncio.sleep(3600)
            yield b"never"
        finally:
            finished.append("closed")

    messages = coalesce(slow(), 1024)
    assert await anext(messages) == b"a"
    await started.wait()
    await messages.aclose()  # type: ignore[attr-defined]
    assert finished == ["closed"]
