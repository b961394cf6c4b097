"""The server's status of a call this client streams requests on (Converse, UploadAsync), not
grpc.aio's local one.

When a send races the server ending the call (sagewire refused an over-size upload, a Converse
session reached its maximum duration), the send fails in gRPC core and grpc.aio sets its own
INTERNAL "Internal error from Core" on the call, before or after the server's status arrives
(docs/errors.md), so the call may report it in place of the server's. `CallStatus` keeps the
first status the call was given (a done callback) and, when that was the local one, waits
briefly for the server's to replace it; only when neither shows does the caller get that
INTERNAL, with a message saying what happened. grpc.aio offers no way to tell the two apart
beyond the code and the details text.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine
from typing import Any, cast

import grpc

from sagewire.client import errors

# grpc.aio's own status when a send fails in gRPC core (the call was ending meanwhile).
LOCAL_SEND_FAILURE = "Internal error from Core"
# How long to wait for the server's status to replace that local one.
STATUS_WAIT_S = 1.0


class CallStatus:
    """The statuses of one grpc.aio call, watched from its start (create it right after the
    call)."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self._first: grpc.aio.AioRpcError | None = None
        call.add_done_callback(self._keep_first)

    def _keep_first(self, call: Any) -> None:
        """Done callback: keep the call's first status before grpc.aio may replace it. Runs as
        the status is set, so its accessors answer at once (stepped, not awaited)."""
        code = _at_once(call.code())
        if self._first is None and code is not None:
            self._first = grpc.aio.AioRpcError(
                code,
                _at_once(call.initial_metadata()),
                _at_once(call.trailing_metadata()),
                _at_once(call.details()),
                _at_once(call.debug_error_string()),
            )

    async def now(self) -> grpc.aio.AioRpcError:
        """The call's status as it is now (the call has ended)."""
        call = self._call
        return grpc.aio.AioRpcError(
            await call.code(),
            await call.initial_metadata(),
            await call.trailing_metadata(),
            await call.details(),
            await call.debug_error_string(),
        )

    async def server_error(self, exc: grpc.RpcError, local: str) -> errors.SagewireError:
        """The error for the call that failed with `exc`: the server's status, not grpc.aio's
        local send failure. `local`: the message when only the local INTERNAL ever shows."""
        if not is_local(exc):
            return errors.from_rpc_error(exc)
        if self._first is not None and not is_local(self._first):
            return errors.from_rpc_error(self._first)  # the local one came second
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STATUS_WAIT_S
        while loop.time() < deadline:
            await asyncio.sleep(0.02)
            status = await self.now()
            if not is_local(status):  # the server's status arrived and replaced it
                return errors.from_rpc_error(status)
        return errors.SagewireError(grpc.StatusCode.INTERNAL, local)


def is_local(error: grpc.RpcError) -> bool:
    """Whether `error` is grpc.aio's local send failure."""
    call = cast("Any", error)
    return bool(call.code() == grpc.StatusCode.INTERNAL and call.details() == LOCAL_SEND_FAILURE)


def _at_once(step: Awaitable[Any]) -> Any:
    """The value of an awaitable that completes without suspending (a finished call's
    status accessors); None when it would have to wait."""
    coroutine = cast("Coroutine[Any, Any, Any]", step)
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    return None
