"""ModelService, health, reflection (v1alpha and v1), pass-through, Converse on a bidi route."""

from __future__ import annotations

from typing import cast

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from sagewire.emulator.server import RunningEmulator
from sagewire.v1 import (
    async_jobs_pb2,
    converse_pb2,
    invoke_pb2,
    model_service_pb2,
)
from support import Sagewire, failure, start_sagewire


async def test_list_models_shows_routes(sagewire: Sagewire) -> None:
    response = await sagewire.models.ListModels(model_service_pb2.ListModelsRequest())
    names = [m.name for m in response.models]
    assert names == sorted(names)
    tokens = next(m for m in response.models if m.name == "tokens")
    assert tokens.mode == model_service_pb2.ROUTE_MODE_STREAM
    assert tokens.endpoint_name == "tokens"
    assert list(tokens.allowed_options) == ["custom_attributes", "framing"]
    assert tokens.timeout.seconds == 60


async def test_get_model_and_unknown_model(sagewire: Sagewire) -> None:
    response = await sagewire.models.GetModel(model_service_pb2.GetModelRequest(name="echo"))
    assert response.model.endpoint_name == "echo"
    assert response.model.mode == model_service_pb2.ROUTE_MODE_REALTIME
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sagewire.models.GetModel(model_service_pb2.GetModelRequest(name="ghost"))
    assert failure(caught.value).reason == "UNKNOWN_MODEL"


@pytest.mark.parametrize(
    "service", ["", "sagewire.v1.InferenceService", "sagewire.v1.ModelService"]
)
async def test_health_serving_overall_and_per_service(sagewire: Sagewire, service: str) -> None:
    response = await sagewire.health.Check(health_pb2.HealthCheckRequest(service=service))
    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_health_unknown_service_is_not_found(sagewire: Sagewire) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sagewire.health.Check(health_pb2.HealthCheckRequest(service="nope.Service"))
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND


async def test_health_names_an_unknown_service_of_any_length_within_the_trailer_limit(
    sagewire: Sagewire,
) -> None:
    # 20,000 "ü": 240,000 bytes once percent-encoded, quoted back in grpc-message.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sagewire.health.Check(health_pb2.HealthCheckRequest(service="ü" * 20_000))
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    assert (caught.value.details() or "").startswith("unknown service 'üü")


@pytest.mark.parametrize("version", ["v1alpha", "v1"])
async def test_reflection_lists_and_describes(sagewire: Sagewire, version: str) -> None:
    # v1 and v1alpha share one wire format, so v1alpha's messages can call either path.
    method = sagewire.channel.stream_stream(
        f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    call = method()  # type: ignore[call-arg]  # grpc-stubs predates optional iterators
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    listed = cast(reflection_pb2.ServerReflectionResponse, await call.read())
    names = {s.name for s in listed.list_services_response.service}
    assert {"sagewire.v1.InferenceService", "grpc.health.v1.Health"} <= names
    assert {
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= names
    await call.write(
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol=f"grpc.reflection.{version}.ServerReflection"
        )
    )
    described = cast(reflection_pb2.ServerReflectionResponse, await call.read())
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in described.file_descriptor_response.file_descriptor_proto
    ]
    assert any(f.package == f"grpc.reflection.{version}" for f in files)
    await call.done_writing()


async def test_converse_on_a_bidi_route_opens_sagemakers_http2_stream(
    emulator: RunningEmulator,
) -> None:
    # The endpoint behind this route serves no bidirectional stream: SageMaker's own answer
    # ends the Converse before any message (the full bidi suite is test_converse_bidi.py).
    routes = {"duplex": {"endpoint": "echo", "mode": "bidi"}}
    async with start_sagewire(emulator, routes=routes) as sw:
        call = sw.inference.Converse()  # type: ignore[call-arg]
        await call.write(
            converse_pb2.ConverseRequest(open=converse_pb2.ConverseOpen(model="duplex"))
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call.read()
    got = failure(caught.value)
    assert (got.code, got.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "SAGEMAKER_VALIDATION")
    assert "bidirectional" in got.message


async def test_endpoint_passthrough_only_when_enabled(
    sagewire: Sagewire, emulator: RunningEmulator
) -> None:
    request = invoke_pb2.InvokeRequest(model="endpoint/echo", body=b"{}")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sagewire.inference.Invoke(request)
    assert failure(caught.value).reason == "UNKNOWN_MODEL"
    async with start_sagewire(emulator.url, server={"allow_endpoint_passthrough": True}) as sw:
        response = await sw.inference.Invoke(request)
        assert response.body == b"{}"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await sw.inference.Invoke(
                invoke_pb2.InvokeRequest(model="endpoint/not_valid!", body=b"{}")
            )
        assert failure(caught.value).code is grpc.StatusCode.INVALID_ARGUMENT


async def test_async_rpcs_on_a_server_without_async_say_so(emulator: RunningEmulator) -> None:
    routes = {"echo": {"endpoint": "echo"}}
    async with start_sagewire(emulator.url, routes=routes, async_jobs={"job_id_keys": []}) as sw:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await sw.inference.SubmitAsync(
                async_jobs_pb2.SubmitAsyncRequest(model="echo", body=b"x")
            )
    f = failure(caught.value)
    assert (f.code, f.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ASYNC_NOT_CONFIGURED")
    assert "no route of mode async" in f.message


async def test_models_show_their_endpoints_status_from_the_control_plane(
    sagewire: Sagewire,
) -> None:
    echo = await sagewire.models.GetModel(model_service_pb2.GetModelRequest(name="echo"))
    assert echo.model.endpoint_status == "InService"
    missing = await sagewire.models.GetModel(model_service_pb2.GetModelRequest(name="missing"))
    assert missing.model.endpoint_status == "NotFound"
    listed = await sagewire.models.ListModels(model_service_pb2.ListModelsRequest())
    statuses = {m.name: m.endpoint_status for m in listed.models}
    assert statuses["tokens"] == "InService"
    assert statuses["missing"] == "NotFound"


async def test_unreachable_control_plane_reads_unknown(emulator: RunningEmulator) -> None:
    async with start_sagewire(emulator, aws={"control_endpoint_url": "http://127.0.0.1:9"}) as sw:
        echo = await sw.models.GetModel(model_service_pb2.GetModelRequest(name="echo"))
    assert echo.model.endpoint_status == "Unknown"
