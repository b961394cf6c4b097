"""Models that serve the bidirectional stream: the ``bidi-echo`` demo and WebSocket containers.

Why: like ``models.Model`` for the unary and response-stream paths, a bidirectional model is
HTTP-agnostic. ``converse(request, inbound)`` is awaited once (a failure there, e.g. the
container is unreachable, is a 424 ModelError before the stream starts) and returns an async
generator of output parts that consumes ``inbound`` as it goes, so input and output interleave
freely (true duplex). A ``ModelFailure`` raised by the generator becomes a ModelStreamError.

Container contract (SageMaker): the model container serves a WebSocket at
``/invocations-bidirectional-stream`` on its port; UTF8 parts travel as text frames and BINARY
parts as binary frames. WebSocket has no half-close, so when the client ends its input the
emulator keeps relaying until the container closes the WebSocket (or stays silent for its
timeout); CompletionState does not reach the container.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import aiohttp

from sagewire.emulator.bidi_events import BINARY, COMPLETE, PARTIAL, UTF8, Part
from sagewire.emulator.model_api import ModelFailure, ModelReply, ModelRequest

CONTAINER_PATH = "/invocations-bidirectional-stream"
_CLOSING = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)


@dataclass(frozen=True)
class BidiRequest:
    """What SageMaker passes on when a bidirectional stream opens."""

    endpoint: str
    variant: str
    model_invocation_path: str | None = None
    model_query_string: str | None = None


@runtime_checkable
class BidiModel(Protocol):
    async def converse(
        self, request: BidiRequest, inbound: AsyncIterator[Part]
    ) -> AsyncGenerator[Part, None]: ...


class BidiEchoModel:
    """``bidi-echo``: every incoming part is answered at once with its bytes upper-cased (same
    DataType, PARTIAL); a part marked COMPLETE is also followed by a UTF8 COMPLETE part
    ``{"final": "<all text received so far>"}`` (text = the UTF8 and untyped parts).

    Unary and response-stream calls get the request body upper-cased, so the endpoint also
    answers InvokeEndpoint.
    """

    async def converse(
        self, request: BidiRequest, inbound: AsyncIterator[Part]
    ) -> AsyncGenerator[Part, None]:
        return self._answer(inbound)

    @staticmethod
    async def _answer(inbound: AsyncIterator[Part]) -> AsyncGenerator[Part, None]:
        text = bytearray()
        async for part in inbound:
            if part.data_type != BINARY:
                text += part.data
            yield Part(part.data.upper(), part.data_type or UTF8, PARTIAL)
            if part.completion_state == COMPLETE:
                final = json.dumps({"final": text.decode("utf-8", errors="replace")})
                yield Part(final.encode(), UTF8, COMPLETE)

    async def invoke(self, request: ModelRequest) -> ModelReply:
        async def body() -> AsyncGenerator[bytes, None]:
            yield request.body.upper()

        return ModelReply(chunks=body(), content_type=request.content_type or "text/plain")


class WebSocketContainer:
    """Fronts a model container's WebSocket (``{url}{path}``) for one endpoint.

    ``timeout_s`` bounds the connect and each silence of the container once the client's input
    has ended (SageMaker gives containers 60 s).
    """

    def __init__(self, url: str, session: aiohttp.ClientSession, timeout_s: float = 60.0) -> None:
        self.base = url.rstrip("/").replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        self.session = session
        self.timeout_s = timeout_s

    def _url(self, request: BidiRequest) -> str:
        path = request.model_invocation_path or CONTAINER_PATH
        url = self.base + "/" + path.lstrip("/")
        if request.model_query_string:
            url += "?" + request.model_query_string
        return url

    async def converse(
        self, request: BidiRequest, inbound: AsyncIterator[Part]
    ) -> AsyncGenerator[Part, None]:
        try:
            async with asyncio.timeout(self.timeout_s):
                ws = await self.session.ws_connect(self._url(request), autoping=True)
        except TimeoutError:
            raise ModelFailure(
                None, "container did not accept the WebSocket in time", timed_out=True
            ) from None
        except aiohttp.WSServerHandshakeError as exc:
            raise ModelFailure(
                exc.status, f"container refused the WebSocket: {exc.message}"
            ) from None
        except aiohttp.ClientError as exc:
            raise ModelFailure(None, f"could not reach the model container: {exc}") from None
        return self._relay(ws, inbound)

    async def _relay(
        self, ws: aiohttp.ClientWebSocketResponse, inbound: AsyncIterator[Part]
    ) -> AsyncGenerator[Part, None]:
        input_done = asyncio.Event()

        async def pump() -> None:
            try:
                async for part in inbound:
                    if part.data_type == BINARY:
                        await ws.send_bytes(part.data)
                    else:
                        await ws.send_str(part.data.decode("utf-8", errors="replace"))
            finally:
                input_done.set()

        loop = asyncio.get_running_loop()
        sender = loop.create_task(pump())
        receiving: asyncio.Task[aiohttp.WSMessage] | None = None
        try:
            while True:
                if receiving is None:
                    receiving = loop.create_task(ws.receive())
                if not input_done.is_set():
                    # Until the client is done the model may legitimately wait for input.
                    waiter = loop.create_task(input_done.wait())
                    await asyncio.wait({receiving, waiter}, return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    if not receiving.done():
                        if sender.done() and (error := sender.exception()) is not None:
                            raise error
                        continue
                else:
                    await asyncio.wait({receiving}, timeout=self.timeout_s)
                    if not receiving.done():
                        raise ModelFailure(None, "container stopped sending", timed_out=True)
                message, receiving = receiving.result(), None
                if message.type is aiohttp.WSMsgType.TEXT:
                    yield Part(str(message.data).encode(), UTF8)
                elif message.type is aiohttp.WSMsgType.BINARY:
                    yield Part(bytes(message.data), BINARY)
                elif message.type is aiohttp.WSMsgType.ERROR:
                    raise ModelFailure(None, f"container WebSocket failed: {ws.exception()}")
                elif message.type in _CLOSING:
                    if ws.close_code not in (None, 1000, 1001):
                        raise ModelFailure(
                            None, f"container closed the WebSocket with code {ws.close_code}"
                        )
                    return
        finally:
            if receiving is not None:
                receiving.cancel()
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), timeout=1.0)
