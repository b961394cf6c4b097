"""gRPC's side of call observation (sagewire.observability.calls): the edge opens a record per
call with the method's grpc_type, counts messages and their sizes, and names the final status.

Kept out of edge.py so the error edge stays a short decorator; everything here is skipped when
the servicer's observer is off.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.message import Message

from sagewire.observability.calls import Call, Observer

type Ctx = grpc.aio.ServicerContext[Any, Any]

# A servicer without an observer set reports nothing.
OFF = Observer()
_CODES = {code.value[0]: code for code in grpc.StatusCode}


def start(servicer: Any, method: str, request: Any) -> tuple[Call | None, Any]:
    """Open the call's record (None when observing is off); a request stream comes back
    wrapped so its messages are counted."""
    observer: Observer = getattr(servicer, "observer", OFF)
    if not observer.enabled:
        return None, request
    call = observer.start(servicer.SERVICE, method)
    if isinstance(request, Message):
        call.received = 1
        call.bytes_in = request.ByteSize()
        return call, request
    return call, _counted(request, call)


async def _counted(requests: AsyncIterator[Message], call: Call) -> AsyncIterator[Message]:
    async for message in requests:
        call.received += 1
        call.bytes_in += message.ByteSize()
        yield message


def sent(call: Call | None, message: Any) -> None:
    """Count one message (a protobuf Message) sent on the call."""
    if call is not None:
        call.sent += 1
        call.bytes_out += message.ByteSize()


def failed(call: Call | None, code: str, reason: str) -> None:
    if call is not None:
        call.code = code
        call.reason = reason


# The client's gRPC core ends a call when its deadline timer fires, while the server's deadline
# was set on arrival, later by the request's transit and scheduling: on a loaded host that is
# tens of milliseconds (10 ms recorded CANCELLED for calls the client saw end by DEADLINE_EXCEEDED
# in CI). A call cancelled this close to its deadline ended by the deadline.
_DEADLINE_SLACK_S = 0.1


def interrupted(call: Call | None, context: Ctx, exc: BaseException) -> None:
    """A call ended by cancellation, its deadline or an abort: name the status the client got."""
    if call is None:
        return
    if isinstance(exc, grpc.aio.AbortError):
        code: Any = context.code()
        if isinstance(code, int):
            code = _CODES.get(code)
        if isinstance(code, grpc.StatusCode) and call.code == "OK":
            call.code = code.name
        return
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        remaining = context.time_remaining()
        reached = remaining is not None and remaining <= _DEADLINE_SLACK_S
        call.code = "DEADLINE_EXCEEDED" if reached else "CANCELLED"


def finish(call: Call | None) -> None:
    """The call ended; once only (an error finishes it before its status goes out, so a scrape
    made as soon as the client sees that status counts it; the edge's `finally` then does
    nothing). A finished call has a duration above zero."""
    if call is not None and not call.duration:
        call.observer.finish(call)
