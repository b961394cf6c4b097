"""Conformance of the emulator's InvokeEndpointWithBidirectionalStream, driven by the official
HTTP/2 SDK (aws-sdk-sagemaker-runtime-http2 with its CRT transport) over TLS on loopback.

Also the container side: the emulator fronts a model container's WebSocket at
/invocations-bidirectional-stream (UTF8 parts ↔ text frames, BINARY ↔ binary frames).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import WSMsgType, web
from aws_sdk_sagemaker_runtime_http2.client import (  # type: ignore[import-untyped]
    AsyncSageMakerRuntimeHTTP2Client,
)
from aws_sdk_sagemaker_runtime_http2.config import (  # type: ignore[import-untyped]
    AsyncSageMakerRuntimeHTTP2Config,
)
from aws_sdk_sagemaker_runtime_http2.models import (  # type: ignore[import-untyped]
    InvokeEndpointWithBidirectionalStreamInput,
    ModelError,
    ModelStreamError,
    RequestPayloadPart,
    RequestStreamEventPayloadPart,
)
from awscrt import io as crt_io  # type: ignore[import-untyped]
from smithy_http.aio.crt import AWSCRTHTTPClient, AWSCRTHTTPClientConfig

from sagewire.emulator import EmulatorConfig, EndpointConfig, Fault, RunningEmulator
from sagewire.emulator.server import running_emulator


@dataclass
class WsContainer:
    """A model container's WebSocket: echoes text reversed and binary as is; "bye" closes."""

    url: str = ""
    seen: list[dict[str, str]] = field(default_factory=list)


def _container_app(record: WsContainer) -> web.Application:
    async def bidi(request: web.Request) -> web.WebSocketResponse:
        record.seen.append({"path": request.path, "query": request.query_string})
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            if message.type is WSMsgType.TEXT:
                if message.data == "bye":
                    await ws.send_str("ciao")
                    break
                await ws.send_str(str(message.data)[::-1])
            elif message.type is WSMsgType.BINARY:
                await ws.send_bytes(bytes(message.data))
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/invocations-bidirectional-stream", bidi)
    app.router.add_get("/custom/path", bidi)
    return app


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def ws_container() -> AsyncIterator[WsContainer]:
    record = WsContainer()
    runner = web.AppRunner(_container_app(record), shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    record.url = f"http://{host}:{port}"
    yield record
    await runner.cleanup()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def bidi_emulator(ws_container: WsContainer) -> AsyncIterator[RunningEmulator]:
    config = EmulatorConfig(
        endpoints={
            "bidi-echo": EndpointConfig(model="bidi-echo", variants=["AllTraffic", "B"]),
            "ws": EndpointConfig(container_url=ws_container.url),
            "ws-down": EndpointConfig(container_url="http://127.0.0.1:9", container_timeout_s=1),
        }
    )
    async with running_emulator(config, bidi=True) as emu:
        yield emu


@pytest.fixture
def emu(bidi_emulator: RunningEmulator, ws_container: WsContainer) -> RunningEmulator:
    bidi_emulator.reset()
    ws_container.seen.clear()
    return bidi_emulator


@asynccontextmanager
async def sdk_client(emu: RunningEmulator) -> AsyncIterator[Any]:
    """The SDK as its docs show it, with the emulator's throwaway CA trusted."""
    transport = AWSCRTHTTPClient(client_config=AWSCRTHTTPClientConfig(force_http_2=True))
    options = crt_io.TlsContextOptions()
    options.override_default_trust_store_from_path(None, str(emu.ca_file))
    transport._tls_ctx = crt_io.ClientTlsContext(options)  # the SDK has no CA option
    config = await AsyncSageMakerRuntimeHTTP2Config.resolve(
        endpoint_uri=emu.bidi_url,
        region="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        transport=transport,
    )

    def keep_transport(c: Any) -> None:
        c.transport = transport  # the config copy would otherwise drop the CA

    client = AsyncSageMakerRuntimeHTTP2Client(config=config, plugins=[keep_transport])
    try:
        yield client
    finally:
        await client.close()
        await transport.close()
        await _settle_crt_writers()


async def _settle_crt_writers() -> None:
    """The CRT writes each request body in a task that fails (error 2080) or waits forever when
    a test leaves a stream the server already ended: end and read those tasks, so they are not
    reported as lost in whichever test runs next (sagewire's adapter does the same)."""
    for task in asyncio.all_tasks():
        if task.get_coro().__qualname__.endswith("_set_request_body_generator"):  # type: ignore[union-attr]
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            if not task.done():
                task.cancel()
    await asyncio.sleep(0.05)


def part(data: bytes, data_type: str = "UTF8", state: str = "PARTIAL") -> Any:
    return RequestStreamEventPayloadPart(
        value=RequestPayloadPart(bytes_=data, data_type=data_type, completion_state=state)
    )


async def received(output: Any) -> tuple[bytes, str | None, str | None]:
    event = await asyncio.wait_for(output.receive(), timeout=5)
    value = event.value
    return value.bytes_, value.data_type, value.completion_state


async def test_signed_parts_are_unwrapped_and_answered_as_they_arrive(emu: RunningEmulator) -> None:
    async with sdk_client(emu) as client:
        stream = await client.invoke_endpoint_with_bidirectional_stream(
            InvokeEndpointWithBidirectionalStreamInput(
                endpoint_name="bidi-echo", target_variant="B"
            )
        )
        await stream.input_stream.send(part(b"hello "))
        response, output = await stream.await_output()
        assert response.invoked_production_variant == "B"
        assert await received(output) == (b"HELLO ", "UTF8", "PARTIAL")
        await stream.input_stream.send(part(b"\x01bin", "BINARY"))
        assert await received(output) == (b"\x01BIN", "BINARY", "PARTIAL")
        await stream.input_stream.send(part(b"world", state="COMPLETE"))
        assert await received(output) == (b"WORLD", "UTF8", "PARTIAL")
        final, data_type, state = await received(output)
        assert json.loads(final) == {"final": "hello world"}
        assert (data_type, state) == ("UTF8", "COMPLETE")
        await stream.input_stream.close()  # the empty signed envelope ends the input
        assert await output.receive() is None
        await stream.close()
    stats = emu.stats("bidi-echo")
    assert (stats.bidi_parts_received, stats.bidi_parts_sent) == (3, 4)
    assert (stats.bidi_streams_started, stats.bidi_streams_completed) == (1, 1)


async def test_model_stream_error_after_n_parts(emu: RunningEmulator) -> None:
    emu.set_fault("bidi-echo", Fault(stream_error_after_parts=1, stream_error_code="StreamBroken"))
    async with sdk_client(emu) as client:
        stream = await client.invoke_endpoint_with_bidirectional_stream(
            InvokeEndpointWithBidirectionalStreamInput(endpoint_name="bidi-echo")
        )
        await stream.input_stream.send(part(b"a"))
        _, output = await stream.await_output()
        assert (await received(output))[0] == b"A"
        await stream.input_stream.send(part(b"b"))
        with pytest.raises(ModelStreamError) as caught:
            await output.receive()
        assert caught.value.error_code == "StreamBroken"
    assert emu.stats("bidi-echo").bidi_streams_failed == 1


async def test_unknown_endpoint_is_an_input_validation_error(emu: RunningEmulator) -> None:
    async with sdk_client(emu) as client:
        stream = await client.invoke_endpoint_with_bidirectional_stream(
            InvokeEndpointWithBidirectionalStreamInput(endpoint_name="nope")
        )
        with pytest.raises(Exception, match="Endpoint nope of account 123456789012 not found"):
            await stream.await_output()


async def test_websocket_container_text_and_binary_frames(
    emu: RunningEmulator, ws_container: WsContainer
) -> None:
    async with sdk_client(emu) as client:
        stream = await client.invoke_endpoint_with_bidirectional_stream(
            InvokeEndpointWithBidirectionalStreamInput(endpoint_name="ws")
        )
        await stream.input_stream.send(part(b"abc"))
        _, output = await stream.await_output()
        assert await received(output) == (b"cba", "UTF8", None)
        await stream.input_stream.send(part(b"\x00\x01", "BINARY"))
        assert await received(output) == (b"\x00\x01", "BINARY", None)
        await stream.input_stream.send(part(b"bye"))
        assert await received(output) == (b"ciao", "UTF8", None)
        assert await output.receive() is None  # the container closed: the stream ends
    assert ws_container.seen == [{"path": "/invocations-bidirectional-stream", "query": ""}]
    assert emu.stats("ws").bidi_streams_completed == 1


async def test_invocation_path_and_query_string_reach_the_container(
    emu: RunningEmulator, ws_container: WsContainer
) -> None:
    async with sdk_client(emu) as client:
        stream = await client.invoke_endpoint_with_bidirectional_stream(
            InvokeEndpointWithBidirectionalStreamInput(
                endpoint_name="ws",
                model_invocation_path="custom/path",
                model_query_string="lang=en&voice=2",
            )
        )
        await stream.input_stream.send(part(b"bye"))
        _, output = await stream.await_output()
        assert (await received(output))[0] == b"ciao"
    assert ws_container.seen == [{"path": "/custom/path", "query": "lang=en&voice=2"}]


async def test_unreachable_container_is_a_model_error(emu: RunningEmulator) -> None:
    async with sdk_client(emu) as client:
        stream = await client.invoke_endpoint_with_bidirectional_stream(
            InvokeEndpointWithBidirectionalStreamInput(endpoint_name="ws-down")
        )
        with pytest.raises(ModelError) as caught:
            await stream.await_output()
    assert "could not reach the model container" in (caught.value.original_message or "")
    assert emu.stats("ws-down").errors == 1
