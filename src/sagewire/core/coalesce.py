"""Relaying raw stream parts that are already waiting as one message (stream coalescing).

Each relayed message costs a gateway far more CPU than its bytes (a gRPC message, an HTTP
chunk, a WebSocket frame), so a model that writes small parts faster than the caller reads them
would leave the gateway sending one message per part while the parts pile up upstream.
`coalesce` joins the parts that are *already* received, up to a byte bound, and never waits
for more: the first part of a batch is relayed as soon as it arrives, so a slow token stream
still sees one message per part, as promptly as without coalescing.

"Already received" is decided by starting the next read eagerly (an eager task runs the
upstream iterator until it has to wait): a read that finishes without waiting joins the batch;
one that has to wait ends the batch and is awaited when the next batch starts. So at most one
part is read ahead of what was relayed, and a slow reader still holds the upstream back
through flow control. Only for raw framing: under `lines` and `sse` each message is one
record (or event), whose boundaries the caller relies on.

Why own code: no library offers "join what is ready now" over an async iterator; asyncio's
eager tasks (Python 3.12) are the primitive that makes "ready" observable without a poll.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

# The default bound (server.stream_coalesce_bytes): 64 KiB, HTTP/2's initial flow-control
# window, far below every client's default receive limit (4 MiB in grpc).
DEFAULT_COALESCE_BYTES = 64 * 1024

_END = object()  # the upstream ended (StopAsyncIteration does not travel well through a Task)


async def _next(upstream: AsyncIterator[bytes]) -> bytes | object:
    try:
        return await anext(upstream)
    except StopAsyncIteration:
        return _END


def _start(upstream: AsyncIterator[bytes]) -> asyncio.Task[bytes | object]:
    """The next read, run at once as far as it goes without waiting."""
    loop = asyncio.get_running_loop()
    return asyncio.Task(_next(upstream), loop=loop, eager_start=True)


async def coalesce(parts: AsyncIterator[bytes], max_bytes: int) -> AsyncIterator[bytes]:
    """`parts` with those already waiting joined, each message at most `max_bytes` long
    unless a single part is longer (a part is never split). The concatenation of what comes
    out is exactly the concatenation of what went in; a failure of `parts` is raised after
    the bytes received before it were yielded. `max_bytes` <= 0 relays `parts` unchanged."""
    if max_bytes <= 0:
        async for part in parts:
            yield part
        return
    upstream = aiter(parts)
    pending: asyncio.Task[bytes | object] | None = None
    try:
        while True:
            if pending is None:
                first = await _next(upstream)
            else:
                first, pending = await pending, None
            if first is _END:
                return
            assert isinstance(first, bytes)
            batch = [first]
            size = len(first)
            failure: BaseException | None = None
            while size < max_bytes:
                pending = _start(upstream)
                if not pending.done():
                    break  # nothing more is waiting: send what we have
                ready, pending = pending, None
                failure = ready.exception()  # (raises CancelledError if it was cancelled)
                if failure is not None:
                    break  # the parts before it go out first
                more = ready.result()
                if more is _END:
                    pending = ready  # seen again at the top of the loop
                    break
                assert isinstance(more, bytes)
                if size + len(more) > max_bytes:
                    pending = ready  # starts the next batch
                    break
                batch.append(more)
                size += len(more)
            yield batch[0] if len(batch) == 1 else b"".join(batch)
            if failure is not None:
                raise failure
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
