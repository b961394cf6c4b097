"""Undecodable requests are INVALID_ARGUMENT on every method the server serves, and a flood of
them logs a bounded number of lines with no traceback.

The methods come from the server itself (reflection's service list, then each service's
descriptor), so an RPC added later is covered without editing this test. Requests are raw
bytes on a plain grpc.aio channel: no stub could send them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool
from google.rpc import error_details_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from sagewire.emulator.server import RunningEmulator
from sagewire.observability import calls
from sagewire.transports.grpc import decoding
from sagewire.v1 import converse_pb2
from support import Sagewire, failure, start_sagewire

JUNK = b"\xff\xff\xff"


def _identity(data: bytes) -> bytes:
    return data


async def _served_methods(sw: Sagewire) -> list[tuple[str, bool, bool, str]]:
    """(path, client streaming, server streaming, input type) of every method served."""
    stub = reflection_pb2_grpc.ServerReflectionStub(sw.channel)

    async def ask() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    async for answer in stub.ServerReflectionInfo(ask()):
        names = [s.name for s in answer.list_services_response.service]
    pool = descriptor_pool.Default()
    methods = []
    for name in names:
        for method in pool.FindServiceByName(name).methods:
            methods.append(
                (
                    f"/{name}/{method.name}",
                    method.client_streaming,
                    method.server_streaming,
                    method.input_type.full_name,
                )
            )
    return methods


async def _call(
    channel: grpc.aio.Channel,
    path: str,
    streams_in: bool,
    streams_out: bool,
    messages: list[bytes],
) -> None:
    kwargs: dict[str, Any] = {"request_serializer": _identity, "response_deserializer": _identity}

    async def requests() -> AsyncIterator[bytes]:
        for message in messages:
            yield message

    if not streams_in and not streams_out:
        await channel.unary_unary(path, **kwargs)(messages[0], timeout=60)
    elif not streams_in:
        [m async for m in channel.unary_stream(path, **kwargs)(messages[0], timeout=60)]
    elif not streams_out:
        await channel.stream_unary(path, **kwargs)(requests(), timeout=60)
    else:
        [m async for m in channel.stream_stream(path, **kwargs)(requests(), timeout=60)]


async def _send(
    channel: grpc.aio.Channel,
    path: str,
    streams_in: bool,
    streams_out: bool,
    messages: list[bytes],
) -> grpc.aio.AioRpcError:
    """The status a call with these raw request messages ends with (it must fail)."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _call(channel, path, streams_in, streams_out, messages)
    return caught.value


async def test_every_method_refuses_undecodable_bytes_with_invalid_argument(
    sagewire: Sagewire, caplog: pytest.LogCaptureFixture
) -> None:
    methods = await _served_methods(sagewire)
    services = {path.split("/")[1] for path, *_ in methods}
    assert {
        "sagewire.v1.InferenceService",
        "sagewire.v1.ModelService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    } <= services
    assert len(methods) >= 14
    caplog.set_level(logging.INFO)
    for path, streams_in, streams_out, input_type in methods:
        error = await _send(sagewire.channel, path, streams_in, streams_out, [JUNK])
        f = failure(error)
        assert (path, f.code) == (path, grpc.StatusCode.INVALID_ARGUMENT), f.message
        assert f.reason == decoding.REASON, path
        # Reflection v1 is served with v1alpha's messages (the same wire format), so compare
        # the message's own name.
        name = input_type.rsplit(".", 1)[1]
        assert re.search(rf"is not a valid [\w.]*\.{name} message", f.message), path
        assert "class" not in f.message  # no Python exception names
        info = f.detail(error_details_pb2.ErrorInfo)
        assert info.metadata["message_type"].endswith(f".{name}")
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def test_an_undecodable_message_after_good_ones_ends_the_stream(sagewire: Sagewire) -> None:
    opening = converse_pb2.ConverseRequest(
        open=converse_pb2.ConverseOpen(model="echo")
    ).SerializeToString()
    error = await _send(
        sagewire.channel,
        "/sagewire.v1.InferenceService/Converse",
        True,
        True,
        [opening, JUNK],
    )
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid sagewire.v1.ConverseRequest message" in (error.details() or "")


async def test_invalid_utf8_in_a_string_field_is_invalid_argument(sagewire: Sagewire) -> None:
    # Field 1 (model), wire type 2, length 2, bytes that are not UTF-8.
    error = await _send(
        sagewire.channel,
        "/sagewire.v1.InferenceService/Invoke",
        False,
        False,
        [b"\x0a\x02\xc3\x28"],
    )
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_a_flood_of_junk_logs_a_bounded_number_of_lines(
    sagewire: Sagewire, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    calls.write_waiting()  # the records of earlier tests' calls on this server
    caplog.clear()
    paths = ["/sagewire.v1.InferenceService/Invoke", "/sagewire.v1.InferenceService/UploadAsync"]
    for i in range(200):
        path = paths[i % 2]
        error = await _send(sagewire.channel, path, path.endswith("Async"), False, [JUNK])
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    calls.write_waiting()  # access records are logged in batches (observability.calls)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) <= 2, [r.getMessage() for r in warnings]
    assert not [r for r in caplog.records if r.exc_info]
    # Besides those, only the access record: one short line per call (server.access_log, on by
    # default; every handled call has one, refused ones too).
    others = [
        r for r in caplog.records if r.name.startswith("sagewire") and r.levelno < logging.WARNING
    ]
    assert {r.name for r in others} == {"sagewire.access"}
    assert len(others) == 200
    assert all("INVALID_ARGUMENT (MALFORMED_REQUEST)" in r.getMessage() for r in others)
    assert all(len(r.getMessage()) < 300 for r in others)


def test_the_rate_limited_log_counts_what_it_leaves_out(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    limited = decoding.RateLimitedLog(logging.getLogger("test.limited"), 10.0, lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.limited"):
        for _ in range(5):
            limited.warning("bad %s", "x")
        now[0] = 10.0
        limited.warning("bad %s", "y")
    assert [r.getMessage() for r in caplog.records] == [
        "bad x",
        "bad y (and 4 more like it in the last 10s)",
    ]


async def test_the_maintenance_listener_refuses_junk_too(emulator: RunningEmulator) -> None:
    async with start_sagewire(emulator, server={"maintenance_listen": "127.0.0.1:0"}) as sw:
        target = f"127.0.0.1:{sw.server.maintenance_port}"
        async with grpc.aio.insecure_channel(target) as plain:
            for path, streams_out in (
                ("/grpc.health.v1.Health/Check", False),
                ("/grpc.health.v1.Health/Watch", True),
            ):
                error = await _send(plain, path, False, streams_out, [JUNK])
                assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, path
                assert failure(error).reason == decoding.REASON
