"""InvokeEndpointWithBidirectionalStream: the emulator's HTTP/2 + TLS listener.

Why: SageMaker serves the bidirectional stream only over HTTP/2 on its own port (8443), and the
official SDK only does duplex over TLS with ALPN h2. ``BidiListener`` serves
``POST /endpoints/{name}/invocations-bidirectional-stream`` on a separate port with a TLS
context (see ``tls.py``) over the same ``EmulatorState`` as the HTTP/1.1 app: same endpoints,
variants, faults and stats.

Per stream: admit (endpoint, variant, request-level faults; errors are plain HTTP error answers
with the HTTP/2 API's error names), send 200 and the event-stream headers at once, then run the
endpoint's ``BidiModel`` with the decoded input parts while writing each output part as one
event frame, as soon as it is produced. Stream faults count the parts sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing

from sagewire.emulator import errors, eventstream
from sagewire.emulator.app import VARIANT_HEADER
from sagewire.emulator.bidi_events import BadInput, InputDecoder, InputEnded, Part, encode_part
from sagewire.emulator.bidi_h2 import H2Server, H2Stream
from sagewire.emulator.bidi_models import BidiModel, BidiRequest, WebSocketContainer
from sagewire.emulator.endpoints import EmulatorState, Endpoint
from sagewire.emulator.errors import ERROR_TYPE_HEADER, ApiError
from sagewire.emulator.faults import DropConnection, Fault
from sagewire.emulator.model_api import ModelFailure
from sagewire.emulator.stats import EndpointStats, StreamOutcome

log = logging.getLogger(__name__)

_PATH = re.compile(r"/endpoints/([^/?]+)/invocations-bidirectional-stream")
_SM = "x-amzn-sagemaker-"
# The HTTP/2 API names some errors differently from the HTTP/1.1 one (its Smithy model).
_HTTP2_ERROR_NAMES = {
    "ValidationError": "InputValidationError",
    "ServiceUnavailable": "ServiceUnavailableError",
    "InternalFailure": "InternalServerError",
}


async def _send_error(stream: H2Stream, err: ApiError, request_id: str) -> None:
    code = _HTTP2_ERROR_NAMES.get(err.code, err.code)
    await stream.respond(
        err.status,
        {
            ERROR_TYPE_HEADER: code,
            "content-type": "application/json",
            "x-amzn-requestid": request_id,
        },
        # The HTTP/2 API's error shapes name the member "Message" (restJson1 is case-sensitive).
        body=json.dumps({"Message": err.message, **err.fields}).encode(),
    )


def _bidi_model(state: EmulatorState, endpoint: Endpoint) -> BidiModel:
    if endpoint.config.container_url is not None:
        return WebSocketContainer(
            endpoint.config.container_url, state.http, endpoint.config.container_timeout_s
        )
    if isinstance(endpoint.model, BidiModel):
        return endpoint.model
    raise errors.validation_error(
        f"Endpoint {endpoint.name} of account {errors.ACCOUNT_ID} does not support "
        "bidirectional streaming."
    )


async def _inbound(stream: H2Stream, stats: EndpointStats) -> AsyncIterator[Part]:
    """The client's PayloadParts as they arrive, until its end marker or END_STREAM."""
    decoder = InputDecoder()
    while (data := await stream.read()) is not None:
        for item in decoder.feed(data):
            if isinstance(item, InputEnded):
                return
            stats.bidi_parts_received += 1
            yield item


class BidiListener:
    """The HTTP/2 TLS server for bidirectional streams over ``state``."""

    def __init__(self, state: EmulatorState, context: ssl.SSLContext) -> None:
        self._state = state
        self._server = H2Server(self._handle, context)

    @property
    def port(self) -> int:
        return self._server.port

    async def start(self, host: str, port: int) -> None:
        await self._server.start(host, port)

    async def close(self, grace_s: float = 1.0) -> None:
        await self._server.close(grace_s)

    async def _handle(self, stream: H2Stream) -> None:
        request_id = str(uuid.uuid4())
        match = _PATH.fullmatch(stream.path.split("?", 1)[0])
        if stream.method != "POST" or match is None:
            await _send_error(
                stream, errors.unknown_operation(stream.method, stream.path), request_id
            )
            return
        name = match.group(1)
        try:
            endpoint = self._state.get(name)
        except KeyError:
            await _send_error(stream, errors.endpoint_not_found(name), request_id)
            return
        stats = endpoint.stats
        stats.invocations += 1
        h = stream.headers
        try:
            variant = endpoint.variant(h.get(_SM + "target-variant"))
            model = _bidi_model(self._state, endpoint)
            await endpoint.active.apply(name, stats)
            request = BidiRequest(
                endpoint=name,
                variant=variant,
                model_invocation_path=h.get(_SM + "model-invocation-path"),
                model_query_string=h.get(_SM + "model-query-string"),
            )
            try:
                outputs = await model.converse(request, _inbound(stream, stats))
            except ModelFailure as failure:
                if failure.timed_out:
                    raise errors.model_timeout(name) from None
                raise errors.model_error(name, failure.status, failure.message) from None
        except ApiError as err:
            stats.errors += 1
            await _send_error(stream, err, request_id)
            return
        except DropConnection:
            stream.drop_connection()  # the injected connection_drop: no answer at all
            return
        fault = endpoint.fault  # faults apply to streams that start after set_fault
        await stream.respond(
            200,
            {
                "content-type": eventstream.CONTENT_TYPE,
                "x-amzn-requestid": request_id,
                VARIANT_HEADER: variant,
            },
        )
        stats.bidi_streams_started += 1
        stats.active_bidi_streams += 1
        outcome = StreamOutcome.ABORTED  # unless the pump says otherwise
        try:
            async with aclosing(outputs):
                outcome = await _pump(stream, outputs, fault, stats)
        finally:
            stats.finish_bidi(outcome)


async def _pump(
    stream: H2Stream, outputs: AsyncGenerator[Part, None], fault: Fault, stats: EndpointStats
) -> StreamOutcome:
    """Write each output part as it is produced, applying stream faults between parts."""
    sent = 0
    while True:
        ending = await _stream_fault(stream, fault, sent)
        if ending is not None:
            return ending
        try:
            part = await anext(outputs)
        except StopAsyncIteration:
            break
        except ModelFailure as failure:
            code = "ModelInvocationTimeExceeded" if failure.timed_out else "StreamBroken"
            await stream.write(eventstream.model_stream_error(failure.message, code), end=True)
            return StreamOutcome.FAILED
        except BadInput as exc:
            await stream.write(eventstream.internal_stream_failure(str(exc)), end=True)
            return StreamOutcome.FAILED
        if fault.part_delay_ms:
            await asyncio.sleep(fault.part_delay_ms / 1000)
        await stream.write(encode_part(part))
        sent += 1
        stats.bidi_parts_sent += 1
    ending = await _stream_fault(stream, fault, sent, at_end=True)
    if ending is not None:
        return ending
    await stream.end()
    return StreamOutcome.COMPLETED


def _due(after_parts: int | None, sent: int, at_end: bool) -> bool:
    return after_parts is not None and (sent >= after_parts or at_end)


async def _stream_fault(
    stream: H2Stream, fault: Fault, sent: int, *, at_end: bool = False
) -> StreamOutcome | None:
    """Apply the stream-ending fault if it is due after ``sent`` parts; else None."""
    if _due(fault.stream_error_after_parts, sent, at_end):
        message = fault.message or "Injected stream error."
        if fault.stream_error == "model_stream_error":
            frame = eventstream.model_stream_error(message, fault.stream_error_code)
        else:
            frame = eventstream.internal_stream_failure(message)
        await stream.write(frame, end=True)
        return StreamOutcome.FAILED
    if _due(fault.close_after_parts, sent, at_end):
        await stream.end(stop_input=True)  # input may still be open: that is the point
        return StreamOutcome.COMPLETED
    if _due(fault.stall_after_parts, sent, at_end):
        await asyncio.Event().wait()  # until the client resets the stream (task cancelled)
    if _due(fault.drop_after_parts, sent, at_end):
        stream.drop_connection()
        return StreamOutcome.DROPPED
    return None
