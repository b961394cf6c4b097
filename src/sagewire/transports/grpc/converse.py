"""Converse over gRPC: ConverseRequest → core client messages, core events → ConverseResponse.

Only conversion; the session itself is sagewire.core.converse. Per-turn errors become
`turn_error` messages carrying the same google.rpc.Status a unary call would end with; a
SagewireError raised out of here ends the stream and is mapped by the edge.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from google.protobuf import timestamp_pb2

from sagewire.core.converse import ConverseSession
from sagewire.core.converse_events import (
    BadTurn,
    CancelTurn,
    ClientMessage,
    CloseSession,
    ConverseEvent,
    ConverseStart,
    SessionChanged,
    SessionOpened,
    Turn,
    TurnChunk,
    TurnEnded,
    TurnFailed,
)
from sagewire.core.errors import SagewireError, invalid_argument
from sagewire.core.gateway import Gateway
from sagewire.core.types import BidiDataType
from sagewire.observability import calls
from sagewire.observability.signals import ConverseReport
from sagewire.transports.grpc import convert, observe
from sagewire.transports.grpc.edge import Ctx
from sagewire.transports.grpc.status import to_rpc_status
from sagewire.v1 import common_pb2, converse_pb2

_DATA_TYPES: dict[BidiDataType, common_pb2.DataType.ValueType] = {
    "UTF8": common_pb2.DATA_TYPE_UTF8,
    "BINARY": common_pb2.DATA_TYPE_BINARY,
}


async def serve(
    gateway: Gateway,
    requests: AsyncIterator[converse_pb2.ConverseRequest],
    context: Ctx,
    json_limit: int,
) -> None:
    """Run one Converse call: read `open`, then hand the rest of the stream to the core."""
    first = await anext(requests, None)
    if first is None or first.WhichOneof("kind") != "open":
        raise invalid_argument(
            "open", "the first ConverseRequest must be `open` (the model and session options)"
        )
    view = convert.response_view(first.open.view)
    session = ConverseSession(gateway, start(first.open, context), messages(requests))
    call = calls.current()
    report = ConverseReport()

    async def send(event: ConverseEvent) -> None:
        message = response(event, json_limit, view)
        observe.sent(call, message)
        if isinstance(event, SessionOpened):
            report.opened()
        elif isinstance(event, TurnEnded):
            report.turn("OK")
        elif isinstance(event, TurnFailed):
            report.turn(event.error.reason)
        await context.write(message)

    try:
        await session.run(send)
    finally:
        report.ended()


def start(message: converse_pb2.ConverseOpen, context: Ctx) -> ConverseStart:
    return ConverseStart(
        model=message.model,
        options=convert.options_from_proto(message.options),
        content_type=message.content_type,
        accept=message.accept,
        framing=convert.framing_from_proto(message.framing),
        time_remaining_s=context.time_remaining(),
    )


async def messages(
    requests: AsyncIterator[converse_pb2.ConverseRequest],
) -> AsyncIterator[ClientMessage]:
    async for request in requests:
        kind = request.WhichOneof("kind")
        if kind == "turn":
            yield turn(request.turn)
        elif kind == "cancel":
            yield CancelTurn(request.cancel.turn_id)
        elif kind == "close":
            yield CloseSession()
        elif kind == "open":
            raise invalid_argument(
                "open", "the session is already open; send `open` only as the first message"
            )
        else:
            raise invalid_argument(
                "kind", "empty ConverseRequest: set one of open, turn, cancel or close"
            )


def turn(message: converse_pb2.ConverseTurn) -> Turn | BadTurn:
    """A turn; on bidi routes one part of it, `text` and `json` sent as UTF8, `body` as BINARY.
    (Whether `partial` fits the route is the core's call.)"""
    try:
        kind = message.WhichOneof("payload")
        if kind == "json":
            body = convert.value_to_json_bytes(message.json)
            content_type = message.content_type or convert.JSON_CONTENT_TYPE
        elif kind == "body":
            body, content_type = message.body, message.content_type
        elif kind == "text":
            body, content_type = message.text.encode(), message.content_type
        else:
            raise invalid_argument("payload", "set one of `body`, `json` or `text`")
    except SagewireError as error:
        return BadTurn(message.turn_id, error)
    data_type: BidiDataType = "BINARY" if kind == "body" else "UTF8"
    return Turn(message.turn_id, body, content_type, message.partial, data_type)


def _timestamp(event: SessionOpened | SessionChanged) -> timestamp_pb2.Timestamp | None:
    if event.expires_at is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(event.expires_at)
    return stamp


def response(
    event: ConverseEvent, json_limit: int, view: convert.View = convert.FULL
) -> converse_pb2.ConverseResponse:
    match event:
        case TurnChunk():
            chunk = converse_pb2.ConverseChunk(turn_id=event.turn_id)
            if event.data_type is not None:  # a part of a bidirectional stream
                chunk.data_type = _DATA_TYPES[event.data_type]
                chunk.partial = event.partial
            convert.set_answer(chunk, event.body, event.record, view, json_limit)
            return converse_pb2.ConverseResponse(chunk=chunk)
        case TurnEnded():
            return converse_pb2.ConverseResponse(
                turn_end=converse_pb2.ConverseTurnEnd(
                    turn_id=event.turn_id,
                    invoked_production_variant=event.invoked_variant,
                    chunk_count=event.chunk_count,
                    byte_count=event.byte_count,
                    endpoint_name=event.endpoint,
                )
            )
        case TurnFailed():
            return converse_pb2.ConverseResponse(
                turn_error=converse_pb2.ConverseTurnError(
                    turn_id=event.turn_id, status=to_rpc_status(event.error)
                )
            )
        case SessionOpened():
            return converse_pb2.ConverseResponse(
                opened=converse_pb2.ConverseOpened(
                    model=event.model,
                    session_id=event.session_id,
                    session_expires_at=_timestamp(event),
                )
            )
        case SessionChanged():
            return converse_pb2.ConverseResponse(
                session=converse_pb2.ConverseSession(
                    session_id=event.session_id,
                    session_expires_at=_timestamp(event),
                    turn_id=event.turn_id,
                    reopened=event.reopened,
                )
            )
