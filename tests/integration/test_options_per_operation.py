"""Options an operation does not take are refused, never dropped: grpc.aio → sagewire →
aioboto3 → the emulator. (Routes cannot allow them at all, tests/unit/test_operations.py; here
pass-through routes, which let callers set every option of InvokeEndpoint.)

The reported instance: InvokeStream with options.target_model answered OK and sent no
X-Amzn-SageMaker-Target-Model (InvokeEndpointWithResponseStream has no TargetModel).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from google.rpc import error_details_pb2

from sagewire.emulator.server import RunningEmulator
from sagewire.v1 import common_pb2, converse_pb2, invoke_pb2
from support import BOTH_AWS_CLIENTS, Sagewire, failure, start_sagewire

pytestmark = BOTH_AWS_CLIENTS


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def passthrough(emulator: RunningEmulator, aws_client: str) -> AsyncIterator[Sagewire]:
    async with start_sagewire(
        emulator.url, server={"allow_endpoint_passthrough": True}, aws={"client": aws_client}
    ) as sw:
        yield sw


def _check(error: grpc.aio.AioRpcError, field: str) -> None:
    f = failure(error)
    assert (f.code, f.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "OPTION_NOT_SUPPORTED")
    assert [v.field for v in f.detail(error_details_pb2.BadRequest).field_violations] == [field]
    assert "InvokeEndpointWithResponseStream has no" in f.message


@pytest.mark.parametrize(
    ("options", "field"),
    [
        (common_pb2.InvocationOptions(target_model="model-a.tar.gz"), "options.target_model"),
        (common_pb2.InvocationOptions(enable_explanations="`true`"), "options.enable_explanations"),
    ],
)
async def test_invoke_stream_refuses_what_the_response_stream_does_not_take(
    passthrough: Sagewire,
    emulator: RunningEmulator,
    options: common_pb2.InvocationOptions,
    field: str,
) -> None:
    request = invoke_pb2.InvokeStreamRequest(
        model="endpoint/tokens", body=b'{"text": "a b"}', options=options
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        [m async for m in passthrough.inference.InvokeStream(request)]
    _check(caught.value, field)
    assert emulator.stats("tokens").streams_started == 0  # refused before any call


async def test_invoke_still_sends_target_model(passthrough: Sagewire) -> None:
    response = await passthrough.inference.Invoke(
        invoke_pb2.InvokeRequest(
            model="endpoint/echo",
            body=b"{}",
            options=common_pb2.InvocationOptions(target_model="model-a.tar.gz"),
        )
    )
    assert response.body == b"{}"


async def test_converse_on_a_stream_route_refuses_it_when_opening(passthrough: Sagewire) -> None:
    async def requests() -> AsyncIterator[converse_pb2.ConverseRequest]:
        yield converse_pb2.ConverseRequest(
            open=converse_pb2.ConverseOpen(
                model="endpoint/tokens",
                options=common_pb2.InvocationOptions(target_model="model-a.tar.gz"),
            )
        )

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        [m async for m in passthrough.inference.Converse(requests(), timeout=30)]
    _check(caught.value, "options.target_model")
