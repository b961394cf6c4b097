"""One open InvokeEndpointWithBidirectionalStream, and the SDK's failures as domain errors.

Part of the SDK adapter (sagewire.aws.bidi). Every wait is bounded: response headers and each
receive by `aws.read_timeout_s`, a send by `send_timeout_s` (the SDK's 16-chunk input buffer
full = the model is not reading), the half-close and the final close by `close_timeout_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any

# The SDK and awscrt ship no type information (pyproject.toml is not ours to extend).
from aws_sdk_sagemaker_runtime_http2.models import (  # type: ignore[import-untyped]
    RequestPayloadPart,
    RequestStreamEventPayloadPart,
    ResponseStreamEventPayloadPart,
    ServiceError,
)
from awscrt.exceptions import AwsCrtError  # type: ignore[import-untyped]
from smithy_core.exceptions import CallError

from sagewire.aws.bidi_transport import StreamTransport, consume_outcome
from sagewire.aws.errors import (
    bidi_connection_lost,
    bidi_input_stalled,
    bidi_read_timeout,
    map_bidi_error,
    map_bidi_transport_error,
)
from sagewire.core.errors import ErrorKind, SagewireError
from sagewire.core.types import BidiPart, BidiStart

log = logging.getLogger(__name__)

# How the SDK names an error code it has no class for ("... - id: <namespace>#Code").
_UNKNOWN_CODE = re.compile(r" - (?:code|id): (?:[\w.]+#)?([A-Za-z0-9_.:-]+)")
# SDK exception attribute → the error field name aws/errors.py reads.
_ERROR_FIELDS = {
    "error_code": "ErrorCode",
    "original_status_code": "OriginalStatusCode",
    "original_message": "OriginalMessage",
    "log_stream_arn": "LogStreamArn",
}


def sdk_failure(exc: BaseException, endpoint: str, *, started: bool) -> SagewireError:
    """Any SDK/CRT failure as the domain error a caller should see."""
    if isinstance(exc, SagewireError):
        return exc
    if isinstance(exc, ServiceError):
        fields = {
            key: value
            for attr, key in _ERROR_FIELDS.items()
            if (value := getattr(exc, attr, None)) is not None
        }
        return map_bidi_error(type(exc).__name__, exc.message, fields, endpoint)
    if isinstance(exc, AwsCrtError):
        return map_bidi_transport_error(exc.name, endpoint)
    if isinstance(exc, CallError):
        found = _UNKNOWN_CODE.search(exc.message)
        if found:
            return map_bidi_error(found.group(1), exc.message, {}, endpoint)
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, AwsCrtError):
        return sdk_failure(cause, endpoint, started=started)
    if started:
        return bidi_connection_lost(endpoint)
    # e.g. "HTTP/2 could not be negotiated", a socket timeout: no detail worth more than this.
    return map_bidi_transport_error(f"{type(exc).__name__}: {exc}"[:200], endpoint)


class BidiStream:
    """An open InvokeEndpointWithBidirectionalStream (implements core.ports.BidiStreamPort)."""

    def __init__(
        self,
        sdk_stream: Any,
        transport: StreamTransport,
        endpoint: str,
        read_timeout_s: float,
        send_timeout_s: float,
        close_timeout_s: float,
    ) -> None:
        self._sdk = sdk_stream
        self._transport = transport
        self._endpoint = endpoint
        self._read_timeout = read_timeout_s
        self._send_timeout = send_timeout_s
        self._close_timeout = close_timeout_s
        self._start: BidiStart | None = None
        self._output: Any = None
        self.input_closed = False
        self.output_done = False
        self._failed: SagewireError | None = None
        self._receiving: asyncio.Future[Any] | None = None
        # The SDK's wait for the response headers, once started; its outcome is always read.
        self._starting: asyncio.Future[Any] | None = None

    async def start(self) -> BidiStart:
        if self._start is not None:
            return self._start
        if self._failed is not None:
            raise self._failed
        try:
            async with asyncio.timeout(self._read_timeout):
                # Shielded: a timeout here must not cancel the SDK's own task.
                response, self._output = await asyncio.shield(self._await_output())
        except TimeoutError:
            raise self._fail(bidi_read_timeout(self._endpoint, self._read_timeout)) from None
        except Exception as exc:
            raise self._fail(sdk_failure(exc, self._endpoint, started=False)) from exc
        self._start = BidiStart(invoked_variant=response.invoked_production_variant or "")
        return self._start

    def _await_output(self) -> asyncio.Future[Any]:
        """The SDK's wait for the response headers, as one task whose outcome is read even
        when nobody waits for it any more (a start that timed out: the TLS failure delay)."""
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._sdk.await_output())
            self._starting.add_done_callback(consume_outcome)
        return self._starting

    async def send(self, part: BidiPart) -> None:
        if self._failed is not None:
            raise self._failed
        if self.input_closed:
            raise SagewireError(
                message="the input of this bidirectional stream is already closed",
                kind=ErrorKind.FAILED_PRECONDITION,
                reason="INPUT_CLOSED",
            )
        event = RequestStreamEventPayloadPart(
            value=RequestPayloadPart(
                bytes_=part.data,
                data_type=part.data_type,
                completion_state="PARTIAL" if part.partial else "COMPLETE",
            )
        )
        try:
            async with asyncio.timeout(self._send_timeout):
                await self._sdk.input_stream.send(event)
        except TimeoutError:
            raise self._fail(bidi_input_stalled(self._endpoint, self._send_timeout)) from None
        except Exception as exc:
            raise self._fail(sdk_failure(exc, self._endpoint, started=True)) from exc

    async def receive(self) -> BidiPart | None:
        await self.start()
        if self.output_done:
            return None
        while True:
            # The SDK's receive runs in a task of its own that a cancelled or timed-out caller
            # leaves alone: cancelling it mid-wait makes the CRT fail later on a cancelled
            # future from its own thread. Closing the connection ends it.
            if self._receiving is None:
                self._receiving = asyncio.ensure_future(self._output.receive())
            try:
                async with asyncio.timeout(self._read_timeout):
                    event = await asyncio.shield(self._receiving)
                self._receiving = None
            except TimeoutError:
                raise self._fail(bidi_read_timeout(self._endpoint, self._read_timeout)) from None
            except Exception as exc:
                self._receiving = None
                self.output_done = True
                raise self._fail(sdk_failure(exc, self._endpoint, started=True)) from exc
            if event is None:
                self.output_done = True
                if (crt_error := self._transport.broken()) is not None:
                    log.debug("bidi stream to %s ended with %s", self._endpoint, crt_error)
                    raise self._fail(bidi_connection_lost(self._endpoint))
                return None
            if isinstance(event, ResponseStreamEventPayloadPart):
                value = event.value
                return BidiPart(
                    data=value.bytes_ or b"",
                    data_type="UTF8" if value.data_type == "UTF8" else "BINARY",
                    partial=value.completion_state != "COMPLETE",
                )
            # Unknown event kinds a newer service may add: skip, as the SDK does.

    async def close_input(self) -> None:
        """Half-close: send the end-of-input frame. Bounded: a server that already ended the
        stream never drains the SDK's buffer, which would hang an unbounded close."""
        if self.input_closed:
            return
        self.input_closed = True
        if self.output_done:
            # The server already ended the stream (END_STREAM, then RST_STREAM NO_ERROR, RFC
            # 9113 §8.1): its input is over too. Once the CRT has seen that, nothing drains the
            # SDK's buffer and its close would wait out the whole bound; whether it has seen it
            # yet is a race, so the ended stream is never half-closed.
            return
        try:
            async with asyncio.timeout(self._close_timeout):
                await self._sdk.input_stream.close()
        except TimeoutError:
            if not self.output_done:
                log.debug("bidi input close timed out on endpoint %s", self._endpoint)
        except Exception as exc:
            if not self.output_done:
                raise self._fail(sdk_failure(exc, self._endpoint, started=True)) from exc

    def _fail(self, error: SagewireError) -> SagewireError:
        self._failed = self._failed or error
        return error

    async def aclose(self) -> None:
        """Close everything, bounded. A stream that is not finished both ways is cut at once:
        closing its connection stops the model upstream."""
        finished = self.output_done and self.input_closed and self._failed is None
        try:
            async with asyncio.timeout(self._close_timeout):
                if finished and self._output is not None:
                    await self._output.close()
                await self._transport.close()  # the stream's own connection
        except TimeoutError:
            log.warning("closing a bidi stream to endpoint %s timed out", self._endpoint)
        except Exception:
            log.debug("error while closing a bidi stream", exc_info=True)
        if self._receiving is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._receiving), self._close_timeout)
            self._receiving.cancel()
        # Retrieve the SDK's background outcome so no task is left with an unread exception.
        if self._start is None:
            # Not awaited: a connection stuck in the TLS failure delay may take 10-30 s.
            self._await_output()
        # End the SDK's input buffer without flushing (nobody will drain it now), so the CRT's
        # body writer task finishes instead of waiting forever.
        writer = getattr(self._sdk.input_stream, "_writer", None)
        if writer is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._close_timeout):
                    await writer.close(flush=False)
