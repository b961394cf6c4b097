"""One client per contender, each making one call the way its users would.

A driver is opened once per load-generator process (one channel, session or client, reused by
every call: per-call client creation is a known anti-pattern nobody should be measured with) and
its `call()` makes one request, returning how many items came back (1 for unary calls, parts
or messages for streams) and when the first one arrived. Every call checks what it got, so a
contender that answers fast but wrong cannot win.
"""

from __future__ import annotations

import base64
import itertools
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Protocol

import aioboto3
import aiohttp
import grpc
from botocore.config import Config
from botocore.eventstream import EventStreamBuffer

from sagewire.v1 import common_pb2, inference_service_pb2_grpc, invoke_pb2

JSON = "application/json"
BODY_ONLY = common_pb2.RESPONSE_VIEW_BODY
STREAM_PATH = "/endpoints/{}/invocations-response-stream"
MAX_MESSAGE = 64 * 1024 * 1024
# The same client settings sagewire's own adapter uses, so the direct caller is not handicapped
# by botocore's default pool of 10 connections.
POOL = 1024

type OnFirst = Callable[[], None] | None


@dataclass(frozen=True)
class Outcome:
    items: int
    first_at: float  # time.perf_counter() when the first item (or the whole answer) arrived


class Driver(Protocol):
    async def call(self, on_first: OnFirst = None) -> Outcome: ...


@dataclass(frozen=True)
class Spec:
    """What to call: `kind` picks the driver; the rest is its address and request."""

    kind: str
    target: str  # host:port for gRPC, base URL for HTTP and AWS
    model: str  # route, endpoint or path segment, depending on kind
    body: bytes
    expect_bytes: int = -1  # unary: the echo must return this many bytes (-1 = do not check)
    expect_items: int = -1  # streams: this many parts or messages (-1 = do not check)
    # gRPC streams of `part_size`-byte parts: count items as parts relayed (bytes received ÷
    # this, rounded up), not messages, since sagewire joins parts already waiting into one
    # message (server.stream_coalesce_bytes). 0 = count messages.
    item_bytes: int = 0
    # gRPC metadata sent with every call (e.g. an authorization header for bench.auth_ab).
    metadata: tuple[tuple[str, str], ...] = ()
    # gRPC unary: calls rotate over this many channels, each its own TCP connection (the
    # workers of `serve --workers N` each take whole connections: bench.workers).
    channels: int = 1


class WrongAnswer(Exception):
    """The contender answered, but not with what was asked for."""


def _check(spec: Spec, got_bytes: int = -1, got_items: int = -1) -> None:
    if spec.expect_bytes >= 0 and got_bytes != spec.expect_bytes:
        raise WrongAnswer(f"expected {spec.expect_bytes} bytes, got {got_bytes}")
    if spec.expect_items >= 0 and got_items != spec.expect_items:
        raise WrongAnswer(f"expected {spec.expect_items} items, got {got_items}")


def _now() -> float:
    return time.perf_counter()


class GrpcInvoke:
    """sagewire's Invoke (or the bare echo server with the same messages), rotating over
    `stubs` (one per channel)."""

    def __init__(
        self, spec: Spec, stubs: Sequence[inference_service_pb2_grpc.InferenceServiceAsyncStub]
    ):
        self._spec = spec
        self._stubs = itertools.cycle(stubs)
        # A caller that reads `body` asks for it alone (docs/json.md): no `json` view built
        # and sent beside it, as the Python client SDK does.
        self._request = invoke_pb2.InvokeRequest(
            model=spec.model, body=spec.body, content_type=JSON, view=BODY_ONLY
        )

    async def call(self, on_first: OnFirst = None) -> Outcome:
        stub = next(self._stubs)
        response = await stub.Invoke(self._request, metadata=self._spec.metadata or None)
        _check(self._spec, got_bytes=len(response.body))
        return Outcome(1, _now())


class GrpcStream:
    """sagewire's InvokeStream: messages (or parts, see Spec.item_bytes) counted, the first
    one timed."""

    def __init__(self, spec: Spec, stub: inference_service_pb2_grpc.InferenceServiceAsyncStub):
        self._spec = spec
        self._stub = stub
        self._request = invoke_pb2.InvokeStreamRequest(
            model=spec.model, body=spec.body, content_type=JSON, view=BODY_ONLY
        )

    async def call(self, on_first: OnFirst = None) -> Outcome:
        first = 0.0
        count = size = 0
        async for message in self._stub.InvokeStream(self._request):
            if not count:
                first = _now()
                if on_first is not None:
                    on_first()
            count += 1
            size += len(message.body)
        if self._spec.item_bytes > 0:
            count = -(-size // self._spec.item_bytes)
        _check(self._spec, got_items=count)
        return Outcome(count, first)


class BotoInvoke:
    """A service calling SageMaker itself: aioboto3 invoke_endpoint on one shared client."""

    def __init__(self, spec: Spec, client: Any) -> None:
        self._spec = spec
        self._client = client

    async def call(self, on_first: OnFirst = None) -> Outcome:
        response = await self._client.invoke_endpoint(
            EndpointName=self._spec.model, Body=self._spec.body, ContentType=JSON
        )
        async with response["Body"] as body:
            data = await body.read()
        _check(self._spec, got_bytes=len(data))
        return Outcome(1, _now())


class BotoStream:
    """aioboto3 invoke_endpoint_with_response_stream, iterating events as botocore parses them."""

    def __init__(self, spec: Spec, client: Any) -> None:
        self._spec = spec
        self._client = client

    async def call(self, on_first: OnFirst = None) -> Outcome:
        response = await self._client.invoke_endpoint_with_response_stream(
            EndpointName=self._spec.model, Body=self._spec.body, ContentType=JSON
        )
        first = 0.0
        count = 0
        async for event in response["Body"]:
            if "PayloadPart" in event:
                if not count:
                    first = _now()
                    if on_first is not None:
                        on_first()
                count += 1
        _check(self._spec, got_items=count)
        return Outcome(count, first)


class HttpPost:
    """A plain aiohttp POST: the raw emulator (HTTP ceiling) or the FastAPI reference."""

    def __init__(self, spec: Spec, session: aiohttp.ClientSession, url: str) -> None:
        self._spec = spec
        self._session = session
        self._url = url

    async def call(self, on_first: OnFirst = None) -> Outcome:
        async with self._session.post(
            self._url, data=self._spec.body, headers={"Content-Type": JSON}
        ) as response:
            data = await response.read()
            if response.status != 200:
                raise WrongAnswer(f"HTTP {response.status}")
        _check(self._spec, got_bytes=len(data))
        return Outcome(1, _now())


class RestInvoke:
    """sagewire's REST bridge, `POST /v1/models/{model}:invoke` with `{"json": <payload>}`, the
    way a REST caller writes it; the answer's `body` (base64) must be the echo."""

    def __init__(self, spec: Spec, session: aiohttp.ClientSession, url: str) -> None:
        self._spec = spec
        self._session = session
        self._url = url
        self._data = b'{"json":' + spec.body + b"}"

    async def call(self, on_first: OnFirst = None) -> Outcome:
        async with self._session.post(
            self._url, data=self._data, headers={"Content-Type": JSON}
        ) as response:
            answer = await response.json()
            if response.status != 200:
                raise WrongAnswer(f"HTTP {response.status}: {answer}")
        _check(self._spec, got_bytes=len(base64.b64decode(answer["body"])))
        return Outcome(1, _now())


class HttpStream:
    """The raw event stream over aiohttp, decoded with botocore's frame parser: the ceiling
    for reading a SageMaker response stream in Python."""

    def __init__(self, spec: Spec, session: aiohttp.ClientSession, url: str) -> None:
        self._spec = spec
        self._session = session
        self._url = url

    async def call(self, on_first: OnFirst = None) -> Outcome:
        first = 0.0
        count = 0
        frames = EventStreamBuffer()
        async with self._session.post(
            self._url, data=self._spec.body, headers={"Content-Type": JSON}
        ) as response:
            if response.status != 200:
                raise WrongAnswer(f"HTTP {response.status}")
            async for chunk, _ in response.content.iter_chunks():
                frames.add_data(chunk)
                for message in frames:
                    if message.headers.get(":event-type") == "PayloadPart":
                        if not count:
                            first = _now()
                            if on_first is not None:
                                on_first()
                        count += 1
        _check(self._spec, got_items=count)
        return Outcome(count, first)


# kind → (transport, streaming)
KINDS = {
    "grpc": ("grpc", False),
    "grpc-stream": ("grpc", True),
    "boto": ("boto", False),
    "boto-stream": ("boto", True),
    "http": ("http", False),
    "http-stream": ("http", True),
    "rest": ("rest", False),
}


async def open_driver(spec: Spec, stack: AsyncExitStack, connections: int) -> Driver:
    """The driver for `spec`, its client registered on `stack` for closing."""
    transport, streaming = KINDS[spec.kind]
    if transport == "grpc":
        options = [
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.max_receive_message_length", MAX_MESSAGE),
        ]
        if spec.channels > 1:  # otherwise equal channels share one connection
            options.append(("grpc.use_local_subchannel_pool", 1))
        stubs = [
            inference_service_pb2_grpc.InferenceServiceStub(
                await stack.enter_async_context(grpc.aio.insecure_channel(spec.target, options))
            )
            for _ in range(spec.channels)
        ]
        return GrpcStream(spec, stubs[0]) if streaming else GrpcInvoke(spec, stubs)
    if transport == "boto":
        client = await stack.enter_async_context(
            aioboto3.Session().client(
                "sagemaker-runtime",
                endpoint_url=spec.target,
                config=Config(
                    region_name="us-east-1",
                    max_pool_connections=max(POOL, connections),
                    retries={"mode": "standard", "total_max_attempts": 3},
                    tcp_keepalive=True,
                ),
            )
        )
        return BotoStream(spec, client) if streaming else BotoInvoke(spec, client)
    session = await stack.enter_async_context(
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max(100, connections)),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
        )
    )
    if streaming:
        return HttpStream(spec, session, spec.target + STREAM_PATH.format(spec.model))
    if transport == "rest":
        return RestInvoke(spec, session, spec.target + spec.model)
    return HttpPost(spec, session, spec.target + spec.model)
