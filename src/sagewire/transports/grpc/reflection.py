"""Server reflection under both names: grpc.reflection.v1alpha (grpcurl 1.8) and
grpc.reflection.v1 (newer clients).

grpcio-reflection only ships v1alpha. The v1 protocol is the same messages under another
package, so the v1 service reuses the v1alpha servicer (identical wire format) and its
descriptor is derived from v1alpha's with the package renamed, making it describable too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2

V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"
V1 = "grpc.reflection.v1.ServerReflection"
_V1_FILE = "grpc/reflection/v1/reflection.proto"


def _register_v1_descriptor() -> None:
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(_V1_FILE)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    old, new = ".grpc.reflection.v1alpha.", ".grpc.reflection.v1."
    proto.name, proto.package = _V1_FILE, "grpc.reflection.v1"
    proto.options.Clear()
    for message in proto.message_type:
        for field in message.field:
            if field.HasField("type_name"):
                field.type_name = field.type_name.replace(old, new)
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old, new)
            method.output_type = method.output_type.replace(old, new)
    pool.AddSerializedFile(proto.SerializeToString())


type Ctx = grpc.aio.ServicerContext[Any, Any]
# Raises (aborts the call) when the caller may not use reflection (auth.reflection_callers).
type ReflectionCheck = Callable[[Ctx], Awaitable[None]]


def enable_reflection(
    server: grpc.aio.Server, service_names: list[str], check: ReflectionCheck | None = None
) -> None:
    _register_v1_descriptor()
    names = [*service_names, V1ALPHA, V1]
    servicer = reflection.aio.ReflectionServicer(names)  # type: ignore[attr-defined]
    serve = servicer.ServerReflectionInfo
    if check is not None:

        async def guarded(requests: AsyncIterator[Any], context: Ctx) -> AsyncIterator[Any]:
            await check(context)
            async for response in servicer.ServerReflectionInfo(requests, context):
                yield response

        serve = guarded
    handler = grpc.stream_stream_rpc_method_handler(
        serve,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        tuple(
            grpc.method_handlers_generic_handler(service, {"ServerReflectionInfo": handler})
            for service in (V1ALPHA, V1)
        )
    )
