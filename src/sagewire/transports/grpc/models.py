"""ModelService: the route table as callers see it."""

from __future__ import annotations

from sagewire.core.endpoint_status import EndpointStatuses
from sagewire.core.gateway import Gateway
from sagewire.security.guard import Security
from sagewire.transports.grpc import convert, edge, observe
from sagewire.transports.grpc.edge import Ctx
from sagewire.v1 import model_service_pb2, model_service_pb2_grpc


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    observer = observe.OFF  # the server sets its own
    SERVICE = "sagewire.v1.ModelService"
    # Set by the server: the edge authenticates and authorises through it.
    security: Security | None = None

    def __init__(self, gateway: Gateway, statuses: EndpointStatuses) -> None:
        self._gateway = gateway
        self._statuses = statuses

    @edge.unary
    async def ListModels(
        self, request: model_service_pb2.ListModelsRequest, context: Ctx
    ) -> model_service_pb2.ListModelsResponse:
        infos = self._gateway.list_models()
        statuses = await self._statuses.of(info.endpoint for info in infos)
        return model_service_pb2.ListModelsResponse(
            models=[convert.model_to_proto(info, statuses[info.endpoint]) for info in infos]
        )

    @edge.unary
    async def GetModel(
        self, request: model_service_pb2.GetModelRequest, context: Ctx
    ) -> model_service_pb2.GetModelResponse:
        info = self._gateway.get_model(request.name)
        statuses = await self._statuses.of([info.endpoint])
        return model_service_pb2.GetModelResponse(
            model=convert.model_to_proto(info, statuses[info.endpoint])
        )
