"""Server assembly: the gRPC server with its services, health, reflection and shutdown.

Lifecycle: `start()` binds and marks every service SERVING; `stop()` flips health to
NOT_SERVING, refuses new calls, lets in-flight calls finish within the grace period, then
cancels what is left (their upstream HTTP requests are cancelled with them).
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sagewire import telemetry
from sagewire.aws.control import SageMakerControl
from sagewire.aws.retries import caller_is_retrying
from sagewire.aws.runtime import SageMakerRuntime
from sagewire.aws.s3 import S3Store
from sagewire.config import ConfigError
from sagewire.config.settings import RouteMode, Settings
from sagewire.core.async_jobs import AsyncJobs
from sagewire.core.converse_sessions import finish_closing
from sagewire.core.endpoint_status import EndpointStatuses
from sagewire.core.errors import SagewireError
from sagewire.core.gateway import Gateway
from sagewire.core.job_results import JobResults, job_codec
from sagewire.core.ports import SageMakerBidiPort
from sagewire.observability.admin import AdminListener
from sagewire.observability.calls import Observer, write_waiting
from sagewire.observability.metrics import Metrics
from sagewire.observability.otel import Otlp
from sagewire.security.guard import Security
from sagewire.transports.grpc.async_jobs import AsyncJobsService
from sagewire.transports.grpc.credentials import reflection_check
from sagewire.transports.grpc.decoding import guarded
from sagewire.transports.grpc.health import SERVING, HealthService
from sagewire.transports.grpc.inference import InferenceServicer
from sagewire.transports.grpc.models import ModelServicer
from sagewire.transports.grpc.observe import OFF
from sagewire.transports.grpc.reflection import enable_reflection
from sagewire.transports.listen import ListenError, check_listen

if TYPE_CHECKING:
    from sagewire.security.tls import RotatingTls
    from sagewire.transports.rest.server import RestListener
from sagewire.v1 import (
    inference_service_pb2,
    inference_service_pb2_grpc,
    model_service_pb2,
    model_service_pb2_grpc,
)

log = logging.getLogger(__name__)

SERVICE_NAMES = [
    inference_service_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name,
    model_service_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name,
]
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


def grpc_options(settings: Settings, reuse_port: bool = False) -> list[tuple[str, int]]:
    """The gRPC server's channel arguments. `reuse_port`: the workers of `serve --workers N`
    share the port (SO_REUSEPORT, the kernel spreading connections over them)."""
    limit = settings.server.max_message_bytes
    options = [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        # Otherwise one process owns its port: a second server on it must fail loudly.
        ("grpc.so_reuseport", int(reuse_port)),
        # Let clients keep idle channels alive with pings without being disconnected.
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
    ]
    options += _connection_bounds(settings)
    window = settings.server.receive_window_bytes
    if window:
        # A fixed window bounds what gRPC buffers per stream ahead of a slow reader; BDP
        # probing grew it to ~16 MiB under a 50 MB UploadAsync (docs/async.md, "Memory").
        options += [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", window)]
    return options


def _connection_bounds(settings: Settings) -> list[tuple[str, int]]:
    """gRPC core's connection limits (docs/security.md, "Connection hygiene")."""
    server = settings.server
    bounds = [("grpc.server_handshake_timeout_ms", int(server.handshake_timeout_s * 1000))]
    if server.max_connection_idle_s:
        bounds.append(("grpc.max_connection_idle_ms", int(server.max_connection_idle_s * 1000)))
    if server.max_connection_age_s:
        bounds += [
            ("grpc.max_connection_age_ms", int(server.max_connection_age_s * 1000)),
            ("grpc.max_connection_age_grace_ms", int(server.max_connection_age_grace_s * 1000)),
        ]
    return bounds


def _bind(server: grpc.aio.Server, listen: str, tls: RotatingTls | None, what: str) -> int:
    try:
        port = (
            server.add_secure_port(listen, tls.grpc_credentials())
            if tls is not None
            else server.add_insecure_port(listen)
        )
    except RuntimeError:  # taken since check_listeners; gRPC says no more than this
        port = 0
    if port == 0:
        raise ListenError(f"cannot listen on {listen} ({what})")
    return port


def check_listeners(settings: Settings) -> None:
    """ListenError naming the first configured address that cannot be bound (gRPC, REST bridge,
    metrics), before anything starts."""
    check_listen(settings.server.listen, "gRPC, server.listen")
    if settings.server.maintenance_listen is not None:
        check_listen(settings.server.maintenance_listen, "health, server.maintenance_listen")
    if settings.rest.listen:
        check_listen(settings.rest.listen, "REST bridge, rest.listen")
    metrics = settings.telemetry.metrics_listen
    if metrics is not None:
        check_listen(metrics, "metrics, telemetry.metrics_listen")


class SagewireServer:
    """sagewire's gRPC server. Use `async with SagewireServer(settings) as server:`.

    `worker=True` (a process of `serve --workers N`, sagewire.cli.workers): the parent has
    checked and reserved every listener address, so this process binds them with SO_REUSEPORT
    beside its siblings, and opens no metrics listener (the parent serves /metrics for all).
    """

    def __init__(self, settings: Settings, worker: bool = False) -> None:
        self.settings = settings
        self.worker = worker
        self.port = 0
        # The plaintext health-only listener's port (server.maintenance_listen), else 0.
        self.maintenance_port = 0
        self.tls: RotatingTls | None = None
        self._maintenance: grpc.aio.Server | None = None
        self._stack = AsyncExitStack()
        self._server: grpc.aio.Server | None = None
        self.health = HealthService()
        self.rest_port = 0
        self._rest: RestListener | None = None
        self.metrics_port = 0  # the admin listener's port, when telemetry.metrics_listen is set
        self._otlp: Otlp | None = None
        self._observer = OFF  # where calls are reported, once start() opened it

    async def start(self) -> int:
        if not self.worker:
            check_listeners(self.settings)
        observer = await self._open_observability()
        runtime = await self._stack.enter_async_context(SageMakerRuntime(self.settings.aws))
        security = self._open_security()
        gateway = Gateway(
            self.settings, runtime, await self._open_bidi(), security, caller_is_retrying
        )
        async_jobs = await self._open_async_jobs(gateway, runtime)
        statuses = self._endpoint_statuses()
        server = grpc.aio.server(options=grpc_options(self.settings, reuse_port=self.worker))
        # Every service registers through the guard: undecodable requests are INVALID_ARGUMENT,
        # and the calls of services without sagewire's edge (health, reflection) are recorded.
        self._observer = observer
        registrar = guarded(server, observer, SERVICE_NAMES)
        inference = InferenceServicer(gateway, self.settings.server.max_json_view_bytes, async_jobs)
        models = ModelServicer(gateway, statuses)
        inference.observer = models.observer = observer
        inference.security = models.security = security  # the edge's security hook
        inference_service_pb2_grpc.add_InferenceServiceServicer_to_server(inference, registrar)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(models, registrar)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, registrar)
        if self.settings.server.reflection:
            check = reflection_check(security) if security.enabled else None
            enable_reflection(registrar, [*SERVICE_NAMES, HEALTH_SERVICE], check)
        listen = self.settings.server.listen
        self.tls = self._open_tls()
        self.port = _bind(server, listen, self.tls, "gRPC, server.listen")
        await server.start()
        self._server = server
        if self.settings.rest.listen:
            # Imported only then: a gRPC-only deployment loads none of the bridge.
            from sagewire.transports.rest.app import build_app
            from sagewire.transports.rest.server import RestListener

            app = build_app(
                self.settings, gateway, async_jobs, statuses, self.health, observer, security
            )
            self._rest = RestListener(
                app,
                self.settings.rest.listen,
                self.tls.ssl_context() if self.tls is not None else None,
                # 0 ("never") is aiohttp's "no keep-alive": close after each answer instead.
                self.settings.server.max_connection_idle_s or 3600.0,
                reuse_port=self.worker,
            )
            self.rest_port = await self._rest.start(self.settings.server.shutdown_grace_s)
        await self._start_maintenance()
        for name in ["", *SERVICE_NAMES]:
            await self.health.set(name, SERVING)
        log.info("sagewire serving on %s (port %d)", listen, self.port)
        return self.port

    async def _open_observability(self) -> Observer:
        """Tracing and OTel metrics (OTEL_* or console), the metrics listener when configured,
        and the observer the servicers report calls to."""
        settings = self.settings.telemetry
        self._otlp = Otlp(settings.service_name)
        telemetry.configure(settings.console_spans, settings.service_name)
        metrics = None
        if settings.metrics_listen is not None:
            metrics = Metrics()
            for name, route in self.settings.routes.items():
                metrics.route_limit.labels(name).set(route.max_concurrency)
                metrics.route_concurrency_limit.labels(name).set(
                    min(route.admission.min_limit, route.max_concurrency)
                    if route.admission.adaptive
                    else route.max_concurrency
                )
            if not self.worker:
                admin = AdminListener(metrics.registry, settings.metrics_listen)
                self.metrics_port = (await self._stack.enter_async_context(admin)).port
        return Observer(metrics, self.settings.server.access_log, self._otlp.meter())

    def _open_security(self) -> Security:
        """Authentication, authorisation and quotas; closed (its JWKS client) on stop."""
        security = Security(self.settings)
        self._stack.push_async_callback(security.close)
        return security

    def _open_tls(self) -> RotatingTls | None:
        tls = self.settings.server.tls
        if tls is None:
            return None
        # Only with TLS: it loads `cryptography` (OpenSSL bindings, ~8 MB of RSS).
        from sagewire.security.tls import RotatingTls, TlsFilesError

        try:
            return RotatingTls(tls)
        except TlsFilesError as exc:
            raise ConfigError("server.tls", [str(exc)]) from None

    async def _start_maintenance(self) -> None:
        """The plaintext health-only listener, sharing the health states of the main one."""
        listen = self.settings.server.maintenance_listen
        if listen is None:
            return
        reuse = [("grpc.so_reuseport", int(self.worker))]
        server = grpc.aio.server(options=reuse + _connection_bounds(self.settings))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, guarded(server, self._observer))
        self.maintenance_port = _bind(server, listen, None, "health, server.maintenance_listen")
        await server.start()
        self._maintenance = server
        log.info("health-only maintenance listener on %s (plaintext)", listen)

    async def _open_async_jobs(
        self, gateway: Gateway, runtime: SageMakerRuntime
    ) -> AsyncJobsService | None:
        """Async inference with its S3 client, when a route has mode `async` or job keys are
        configured (a replica without async routes may still answer for jobs submitted
        elsewhere). Otherwise no S3 client is made: it costs memory for nothing."""
        jobs = self.settings.async_jobs
        routes = self.settings.routes.values()
        if not jobs.job_id_keys and not any(r.mode is RouteMode.ASYNC for r in routes):
            return None
        s3 = await self._stack.enter_async_context(
            S3Store(self.settings.aws, jobs.upload_part_bytes, jobs.read_chunk_bytes)
        )
        codec = job_codec(jobs)
        return AsyncJobsService(
            AsyncJobs(self.settings, gateway.routes, runtime, s3, codec),
            JobResults(jobs, self.settings.routes, codec, s3, guard=gateway.routes.guard),
            self.settings.server.max_json_view_bytes,
        )

    def _endpoint_statuses(self) -> EndpointStatuses:
        """Endpoint statuses from the control plane (its client made on first use)."""

        async def open_control() -> SageMakerControl:
            return await self._stack.enter_async_context(SageMakerControl(self.settings.aws))

        return EndpointStatuses(open_control, self.settings.aws.endpoint_status_ttl_s)

    async def _open_bidi(self) -> SageMakerBidiPort | None:
        """The client of SageMaker's HTTP/2 API, when a route has mode `bidi`."""
        if not any(route.mode is RouteMode.BIDI for route in self.settings.routes.values()):
            return None
        # Imported only then: the HTTP/2 SDK is pre-alpha, and routes without it need none of it.
        from sagewire.aws.bidi import SageMakerBidi

        try:
            return await self._stack.enter_async_context(SageMakerBidi(self.settings.aws))
        except SagewireError as error:  # aws.ca_bundle is not a readable file
            raise ConfigError("aws", [error.message]) from None

    async def stop(self, grace_s: float | None = None) -> None:
        grace = self.settings.server.shutdown_grace_s if grace_s is None else grace_s
        if self._server is not None:
            # One drain for both listeners: health (gRPC and /readyz) flips first, then both
            # stop accepting and give in-flight calls the same grace period, side by side.
            await self.health.enter_graceful_shutdown()
            delay = self.settings.server.drain_delay_s
            if delay:
                # A replica that refuses calls while a balancer still sends them fails those
                # calls (gRPC cancels calls that arrive once its server is stopping); serving
                # them while health says NOT_SERVING lets the balancer's health check move
                # traffic away first.
                log.info("draining: health NOT_SERVING, still serving for %.1fs", delay)
                await asyncio.sleep(delay)
            log.info("shutting down: refusing new calls, %.1fs grace for in-flight calls", grace)
            stops = [self._server.stop(grace)]
            if self._rest is not None:
                stops.append(self._rest.stop())
            await asyncio.gather(*stops)
            self._server = None
            self._rest = None
        if self._maintenance is not None:
            await self._maintenance.stop(0)
            self._maintenance = None
        await finish_closing()  # cancelled Converse sessions close theirs on the AWS client
        await self._stack.aclose()
        if self._otlp is not None:
            # Calls that ended in the last 50 ms wait for their batch (observability.calls):
            # measured now, or the meter is shut down without them.
            write_waiting()
            self._otlp.shutdown()  # export what is pending
            self._otlp = None

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    async def __aenter__(self) -> SagewireServer:
        try:
            await self.start()
        except BaseException:
            # Nothing may stay up after a failed start (a listener after gRPC's failed).
            for started in (self._server, self._maintenance):
                if started is not None:
                    await started.stop(0)
            self._server = self._maintenance = None
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
