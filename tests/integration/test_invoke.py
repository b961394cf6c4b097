"""Invoke end to end: grpc.aio client → sagewire → aioboto3 → emulator, all over loopback."""

from __future__ import annotations

import json

import grpc
import pytest
from google.rpc import error_details_pb2

from sagewire.emulator.server import RunningEmulator
from sagewire.v1 import common_pb2, invoke_pb2
from support import BOTH_AWS_CLIENTS, Sagewire, failure

pytestmark = BOTH_AWS_CLIENTS


async def test_json_round_trip(sagewire: Sagewire) -> None:
    request = invoke_pb2.InvokeRequest(model="echo")
    request.json.struct_value.update({"inputs": "hi", "n": 2})
    response = await sagewire.inference.Invoke(request)
    assert json.loads(response.body) == {"inputs": "hi", "n": 2}
    assert response.content_type == "application/json"
    assert response.json.struct_value["inputs"] == "hi"
    assert response.json.struct_value["n"] == 2
    assert response.invoked_production_variant == "AllTraffic"


async def test_bytes_round_trip_keeps_content_type_and_skips_json(sagewire: Sagewire) -> None:
    payload = bytes(range(256)) * 4
    response = await sagewire.inference.Invoke(
        invoke_pb2.InvokeRequest(model="echo", body=payload, content_type="application/x-blob")
    )
    assert response.body == payload
    assert response.content_type == "application/x-blob"
    assert not response.HasField("json")


async def test_allowed_options_reach_sagemaker(sagewire: Sagewire) -> None:
    response = await sagewire.inference.Invoke(
        invoke_pb2.InvokeRequest(
            model="echo",
            body=b"{}",
            options=common_pb2.InvocationOptions(target_variant="B", inference_id="req-1"),
        )
    )
    assert response.invoked_production_variant == "B"


async def test_unknown_model_is_not_found(sagewire: Sagewire) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sagewire.inference.Invoke(invoke_pb2.InvokeRequest(model="nope", body=b"x"))
    f = failure(caught.value)
    assert f.code is grpc.StatusCode.NOT_FOUND
    assert f.reason == "UNKNOWN_MODEL"
    assert "'nope'" in f.message
    assert "echo" in f.message


async def test_unknown_endpoint_is_not_found(sagewire: Sagewire) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sagewire.inference.Invoke(invoke_pb2.InvokeRequest(model="missing", body=b"x"))
    f = failure(caught.value)
    assert f.code is grpc.StatusCode.NOT_FOUND
    assert f.reason == "ENDPOINT_NOT_FOUND"
    assert "no-such-endpoint" in f.message


@pytest.mark.parametrize(
    ("request_", "field", "reason"),
    [
        (
            invoke_pb2.InvokeRequest(
                model="echo",
                body=b"x",
                options=common_pb2.InvocationOptions(target_variant="not_valid!"),
            ),
            "options.target_variant",
            "INVALID_ARGUMENT",
        ),
        (
            invoke_pb2.InvokeRequest(
                model="echo",
                body=b"x",
                options=common_pb2.InvocationOptions(custom_attributes="é"),
            ),
            "options.custom_attributes",
            "INVALID_ARGUMENT",
        ),
        (
            invoke_pb2.InvokeRequest(
                model="echo-strict",
                body=b"x",
                options=common_pb2.InvocationOptions(target_variant="B"),
            ),
            "options.target_variant",
            "OPTION_NOT_ALLOWED",
        ),
        (invoke_pb2.InvokeRequest(model="echo"), "payload", "INVALID_ARGUMENT"),
        (invoke_pb2.InvokeRequest(body=b"x"), "model", "INVALID_ARGUMENT"),
        (
            invoke_pb2.InvokeRequest(model="echo", body=b"x", content_type="text/\x01plain"),
            "content_type",
            "INVALID_ARGUMENT",
        ),
    ],
    ids=[
        "bad-variant",
        "non-ascii-attributes",
        "not-allowed",
        "no-payload",
        "no-model",
        "bad-type",
    ],
)
async def test_bad_input_names_the_field(
    sagewire: Sagewire,
    emulator: RunningEmulator,
    request_: invoke_pb2.InvokeRequest,
    field: str,
    reason: str,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sagewire.inference.Invoke(request_)
    f = failure(caught.value)
    assert f.code is grpc.StatusCode.INVALID_ARGUMENT
    assert f.reason == reason
    assert f.message.startswith(field)
    bad = f.detail(error_details_pb2.BadRequest)
    assert bad is not None
    assert bad.field_violations[0].field == field
    # Rejected before any network call.
    assert emulator.stats("echo").invocations == 0


async def test_body_over_sagemaker_limit_names_the_limit(
    sagewire: Sagewire, emulator: RunningEmulator
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sagewire.inference.Invoke(
            invoke_pb2.InvokeRequest(model="echo", body=b"x" * (6_291_456 + 1))
        )
    f = failure(caught.value)
    assert f.code is grpc.StatusCode.INVALID_ARGUMENT
    assert f.reason == "PAYLOAD_TOO_LARGE"
    assert "6291456" in f.message
    assert emulator.stats("echo").invocations == 0


async def test_body_at_sagemaker_limit_is_accepted(sagewire: Sagewire) -> None:
    body = b"y" * 6_291_456
    response = await sagewire.inference.Invoke(
        invoke_pb2.InvokeRequest(model="echo", body=body, content_type="application/octet-stream")
    )
    assert len(response.body) == len(body)


async def test_message_over_grpc_limit_is_resource_exhausted(sagewire: Sagewire) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sagewire.inference.Invoke(
            invoke_pb2.InvokeRequest(model="echo", body=b"z" * (9 * 1024 * 1024))
        )
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "8388608" in (caught.value.details() or "")


async def test_invoke_on_async_route_is_failed_precondition(sagewire: Sagewire) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sagewire.inference.Invoke(invoke_pb2.InvokeRequest(model="async-only", body=b"x"))
    f = failure(caught.value)
    assert f.code is grpc.StatusCode.FAILED_PRECONDITION
    assert f.reason == "WRONG_MODE"
