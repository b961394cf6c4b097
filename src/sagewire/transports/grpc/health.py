"""grpc.health.v1.Health that lets shutdown finish early.

grpcio-health-checking's aio servicer keeps every Watch stream open through shutdown, so a
balancer watching health holds `server.stop(grace)` for the whole grace period. Here a Watch
sends NOT_SERVING and then ends with OK once shutdown begins, so the grace period only waits
for real work.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sagewire.core.error_text import MESSAGE_MAX_BYTES, clip_encoded

type Status = health_pb2.HealthCheckResponse.ServingStatus.ValueType
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class HealthService(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self._status: dict[str, Status] = {}
        self._changed = asyncio.Condition()
        self.draining = False

    async def set(self, service: str, status: Status) -> None:
        if self.draining:
            return
        async with self._changed:
            self._status[service] = status
            self._changed.notify_all()

    def serving(self, service: str = "") -> bool:
        """Whether `service` ("" = overall) is SERVING and no drain has begun (readiness)."""
        return not self.draining and self._status.get(service) == SERVING

    async def enter_graceful_shutdown(self) -> None:
        """Every service NOT_SERVING for good; open Watch streams report it and end."""
        async with self._changed:
            self.draining = True
            self._status = dict.fromkeys(self._status, NOT_SERVING)
            self._changed.notify_all()

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthCheckResponse:
        status = self._status.get(request.service)
        if status is None:
            # The caller's text, quoted back: bounded like every error (core.error_text).
            message = clip_encoded(f"unknown service {request.service!r}", MESSAGE_MAX_BYTES)
            await context.abort(grpc.StatusCode.NOT_FOUND, message)
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        last: Status | None = None
        while True:
            async with self._changed:
                status = self._status.get(request.service, SERVICE_UNKNOWN)
                if status == last:
                    if self.draining:
                        return
                    await self._changed.wait()
                    continue
            last = status
            yield health_pb2.HealthCheckResponse(status=status)
