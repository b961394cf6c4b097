"""deploy/envoy/envoy.yaml, run: a real Envoy in front of two `sagewire serve` processes on the
emulator, with a real grpc.aio client calling through it.

Which replica served a call is read off the wire: replica A routes model `echo` to emulator
endpoint `echo-a`, whose only variant is `replica-a` (B likewise), and sagewire returns the
variant SageMaker reports in `invoked_production_variant`.

The pushback tests run sagewire answering SageMaker's ServiceUnavailable (UNAVAILABLE with
grpc-retry-pushback-ms 1000), and a small gRPC peer for other values: none, sub-second, and -1
("do not retry").
"""

from __future__ import annotations

import asyncio
import itertools
import re
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from pathlib import Path

import grpc
import pytest
import trustme
from envoy_proxy import ENVOY, loopback_config, running_envoy, with_upstream_mtls
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from processes import Process, sagewire_process

from sagewire.emulator.config import EmulatorConfig, EndpointConfig
from sagewire.emulator.faults import Fault
from sagewire.emulator.server import RunningEmulator, running_emulator
from sagewire.transports.grpc.health import SERVING, HealthService
from sagewire.v1 import (
    inference_service_pb2,
    inference_service_pb2_grpc,
    invoke_pb2,
    model_service_pb2,
)

pytestmark = pytest.mark.skipif(not ENVOY.exists(), reason=f"no Envoy at {ENVOY}")

EMULATOR = EmulatorConfig(
    endpoints={
        "echo-a": EndpointConfig(model="echo", variants=["replica-a"]),
        "echo-b": EndpointConfig(model="echo", variants=["replica-b"]),
    }
)
WORKERS = 6


@contextmanager
def replica(
    name: str,
    emulator: RunningEmulator,
    workdir: Path,
    port: int = 0,
    env: dict[str, str] | None = None,
) -> Iterator[Process]:
    config = workdir / f"replica-{name}.toml"
    config.write_text(
        # drain_delay_s as in deploy/k8s: longer than Envoy's health check takes to see
        # NOT_SERVING (two checks a second apart), as docs/deploy.md says.
        "[server]\nshutdown_grace_s = 5\ndrain_delay_s = 5\n\n"
        f'[routes.echo]\nendpoint = "echo-{name}"\n',
        encoding="utf-8",
    )
    environ = {
        "SAGEWIRE_SERVER__LISTEN": f"127.0.0.1:{port}",
        "SAGEWIRE_AWS__RUNTIME_ENDPOINT_URL": emulator.url,
        **(env or {}),
    }
    with sagewire_process("serve", "--config", str(config), env=environ) as process:
        yield process


class Load:
    """WORKERS callers in closed loop through Envoy; every outcome is counted by phase."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.stub = inference_service_pb2_grpc.InferenceServiceStub(channel)
        self.phase = "start"
        self.served: dict[str, Counter[str]] = {}
        self.failures: list[str] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._caller(i)) for i in range(WORKERS)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def count(self, phase: str, variant: str) -> int:
        return self.served.get(phase, Counter())[variant]

    async def _caller(self, number: int) -> None:
        body = b'{"caller": %d}' % number
        while not self._stop.is_set():
            phase = self.phase
            try:
                reply = await self.stub.Invoke(
                    invoke_pb2.InvokeRequest(model="echo", body=body), timeout=20
                )
            except grpc.aio.AioRpcError as error:
                self.failures.append(f"{phase}: {error.code().name}: {error.details()}")
                continue
            assert reply.body == body
            self.served.setdefault(phase, Counter())[reply.invoked_production_variant] += 1


async def until(condition: Callable[[], bool], within_s: float, what: str, load: Load) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within_s}s; served {load.served}")
        await asyncio.sleep(0.05)


async def test_calls_spread_and_a_replica_restart_fails_no_call(tmp_path: Path) -> None:
    async with running_emulator(EMULATOR) as emulator:
        with ExitStack() as stack:
            a = stack.enter_context(replica("a", emulator, tmp_path))
            b = stack.enter_context(replica("b", emulator, tmp_path))
            port_a = int(a.target.rsplit(":", 1)[1])
            port_b = int(b.target.rsplit(":", 1)[1])
            envoy = stack.enter_context(running_envoy(loopback_config([port_a, port_b]), tmp_path))
            async with grpc.aio.insecure_channel(envoy.target) as channel:
                load = Load(channel)
                load.phase = "both"
                load.start()
                try:
                    # One client connection, and both replicas serve its calls.
                    await until(
                        lambda: (
                            min(load.count("both", "replica-a"), load.count("both", "replica-b"))
                            >= 25
                        ),
                        60,
                        "calls reach both replicas",
                        load,
                    )
                    # SIGTERM to A in the middle of the load: it drains and exits.
                    load.phase = "a-draining"
                    exit_code = await asyncio.to_thread(a.stop, signal.SIGTERM, 30.0)
                    load.phase = "a-down"
                    await until(
                        lambda: load.count("a-down", "replica-b") >= 50, 30, "B serves alone", load
                    )
                    # A comes back on its port; Envoy's health check lets it in again.
                    await asyncio.to_thread(
                        stack.enter_context, replica("a", emulator, tmp_path, port_a)
                    )
                    load.phase = "a-back"
                    await until(
                        lambda: load.count("a-back", "replica-a") >= 25,
                        60,
                        "A receives calls again",
                        load,
                    )
                finally:
                    await load.stop()
            stats = envoy.stats()
    spread = {phase: dict(counter) for phase, counter in load.served.items()}
    print(f"\nspread by phase: {spread}")
    print(f"failed calls: {len(load.failures)}")
    print(
        "envoy: "
        + ", ".join(
            f"{key}={stats.get(key, 0)}"
            for key in (
                "upstream_rq_retry",
                "upstream_rq_retry_success",
                "upstream_cx_connect_fail",
                "health_check.failure",
                "health_check.success",
                "outlier_detection.ejections_enforced_total",
            )
        )
    )
    assert exit_code == 0
    assert load.failures == []
    assert load.count("a-back", "replica-b") > 0  # B keeps serving too


def test_every_streaming_method_takes_the_route_without_a_per_try_timeout() -> None:
    """A per-try timeout would cut a long stream; the stream routes must name every streaming
    method of every service sagewire serves, and the unary route (with it) only unary ones."""
    config = loopback_config([1])
    (listener,) = config["static_resources"]["listeners"]
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    routes = manager["route_config"]["virtual_hosts"][0]["routes"]

    def route_for(path: str) -> dict[str, object]:
        for route in routes:
            match = route["match"]
            if "safe_regex" in match and re.fullmatch(match["safe_regex"]["regex"], path):
                return dict(route["route"])
            if match.get("path") == path or path.startswith(match.get("prefix", "\0")):
                return dict(route["route"])
        raise AssertionError(f"no route for {path}")

    files = [inference_service_pb2, model_service_pb2, health_pb2, reflection_pb2]
    checked = 0
    for module in files:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                path = f"/{service.full_name}/{method.name}"
                streaming = method.client_streaming or method.server_streaming
                retry_policy = route_for(path).get("retry_policy") or {}
                assert isinstance(retry_policy, dict)
                assert ("per_try_timeout" in retry_policy) is not streaming, path
                checked += 1
    assert checked >= 14


async def test_envoy_waits_the_pushback_sagewire_sends(tmp_path: Path) -> None:
    """sagewire answers SageMaker's ServiceUnavailable with UNAVAILABLE and
    grpc-retry-pushback-ms 1000; Envoy retries the call on the other replica after that second,
    and the caller gets the answer."""
    async with running_emulator(EMULATOR) as emulator:
        emulator.set_fault("echo-a", Fault(error="service_unavailable"))
        with ExitStack() as stack:
            # One attempt at SageMaker, so replica A answers at once.
            a = stack.enter_context(
                replica("a", emulator, tmp_path, env={"SAGEWIRE_AWS__MAX_ATTEMPTS": "1"})
            )
            b = stack.enter_context(replica("b", emulator, tmp_path))
            ports = [int(p.target.rsplit(":", 1)[1]) for p in (a, b)]
            envoy = stack.enter_context(running_envoy(loopback_config(ports), tmp_path))
            async with grpc.aio.insecure_channel(envoy.target) as channel:
                stub = inference_service_pb2_grpc.InferenceServiceStub(channel)
                durations: list[tuple[int, float]] = []
                for _ in range(20):
                    shed = emulator.stats("echo-a").invocations
                    started = time.monotonic()
                    reply = await stub.Invoke(
                        invoke_pb2.InvokeRequest(model="echo", body=b"{}"), timeout=20
                    )
                    durations.append(
                        (emulator.stats("echo-a").invocations - shed, time.monotonic() - started)
                    )
                    assert reply.invoked_production_variant == "replica-b"
                    if sum(1 for tried_a, _ in durations if tried_a) >= 2:
                        break
    retried = [took for tried_a, took in durations if tried_a]
    direct = [took for tried_a, took in durations if not tried_a]
    print(f"via A then B: {[f'{t:.2f}s' for t in retried]}; B only: {len(direct)} calls")
    assert len(retried) >= 2
    assert all(took >= 0.95 for took in retried)


async def test_envoy_reaches_replicas_over_mutual_tls(tmp_path: Path) -> None:
    """deploy/envoy/upstream-mtls.yaml in front of sagewire with [server.tls] and a client CA
    (the prod overlay): Envoy's health check and calls go over mutual TLS."""
    ca = trustme.CA()
    server_dir, envoy_dir = tmp_path / "server", tmp_path / "envoy"
    for directory, leaf in (
        (server_dir, ca.issue_cert("sagewire.test")),
        (envoy_dir, ca.issue_cert("envoy.test")),
    ):
        directory.mkdir()
        leaf.cert_chain_pems[0].write_to_path(str(directory / "tls.crt"))
        leaf.private_key_pem.write_to_path(str(directory / "tls.key"))
        ca.cert_pem.write_to_path(str(directory / "ca.crt"))
    tls = {
        "SAGEWIRE_SERVER__TLS__CERT_FILE": str(server_dir / "tls.crt"),
        "SAGEWIRE_SERVER__TLS__KEY_FILE": str(server_dir / "tls.key"),
        "SAGEWIRE_SERVER__TLS__CLIENT_CA_FILE": str(server_dir / "ca.crt"),
    }
    async with running_emulator(EMULATOR) as emulator:
        with (
            replica("a", emulator, tmp_path, env=tls) as a,
            running_envoy(
                with_upstream_mtls(
                    loopback_config([int(a.target.rsplit(":", 1)[1])]), envoy_dir, "sagewire.test"
                ),
                tmp_path,
            ) as envoy,
        ):
            async with grpc.aio.insecure_channel(envoy.target) as channel:
                stub = inference_service_pb2_grpc.InferenceServiceStub(channel)
                for _ in range(3):
                    reply = await stub.Invoke(
                        invoke_pb2.InvokeRequest(model="echo", body=b"{}"), timeout=20
                    )
                    assert reply.invoked_production_variant == "replica-a"
            stats = envoy.stats()
    print(
        f"over mTLS: health checks ok {stats.get('health_check.success')}, "
        f"TLS handshakes {stats.get('ssl.handshake')}"
    )
    assert stats.get("health_check.success", 0) >= 1
    assert stats.get("ssl.handshake", 0) >= 1


@asynccontextmanager
async def grpc_peer(
    invoke: Callable[[bytes, grpc.aio.ServicerContext[bytes, bytes]], Awaitable[bytes]],
) -> AsyncIterator[int]:
    """A gRPC server on a free loopback port answering `Invoke` with `invoke` and health SERVING
    (so Envoy's health check admits it); yields its port."""
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "sagewire.v1.InferenceService",
                {"Invoke": grpc.unary_unary_rpc_method_handler(invoke)},
            ),
        )
    )
    health = HealthService()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await health.set("", SERVING)
    try:
        yield port
    finally:
        await server.stop(0)


class SheddingReplica:
    """A gRPC peer that answers `Invoke` UNAVAILABLE with the given grpc-retry-pushback-ms
    trailer (gRFC A6) on its first attempt, then the answer: pushback values the sagewire test
    above does not show (none, sub-second, -1)."""

    def __init__(self, pushback: str | None) -> None:
        self.pushback = pushback
        self.attempts: list[float] = []

    async def invoke(
        self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> bytes:
        self.attempts.append(time.monotonic())
        if len(self.attempts) == 1:
            if self.pushback is not None:
                context.set_trailing_metadata((("grpc-retry-pushback-ms", self.pushback),))
            await context.abort(grpc.StatusCode.UNAVAILABLE, "shedding load")
        return invoke_pb2.InvokeResponse(body=request).SerializeToString()


@pytest.mark.parametrize(
    ("pushback", "retried", "least_gap_s", "most_gap_s"),
    [
        ("300", True, 0.9, 10.0),  # 300 ms, read by Envoy as a whole second
        (None, True, 0.0, 0.9),  # no pushback: Envoy's own back-off (25-250 ms)
        ("-1", False, 0.0, 0.0),  # "do not retry"
    ],
)
async def test_retries_honour_grpc_retry_pushback(
    tmp_path: Path, pushback: str | None, retried: bool, least_gap_s: float, most_gap_s: float
) -> None:
    peer = SheddingReplica(pushback)
    async with grpc_peer(peer.invoke) as port:
        with running_envoy(loopback_config([port]), tmp_path) as envoy:
            async with grpc.aio.insecure_channel(envoy.target) as channel:
                stub = inference_service_pb2_grpc.InferenceServiceStub(channel)
                request = invoke_pb2.InvokeRequest(model="echo", body=b"{}")
                if retried:
                    reply = await stub.Invoke(request, timeout=20)
                    assert reply.body == request.SerializeToString()
                else:
                    with pytest.raises(grpc.aio.AioRpcError) as failed:
                        await stub.Invoke(request, timeout=20)
                    # The caller sees sagewire's status, not the one Envoy's filter hid.
                    assert failed.value.code() is grpc.StatusCode.UNAVAILABLE
                    assert failed.value.details() == "shedding load"
                    await asyncio.sleep(1.5)  # a retry, if one came, would have come by now
    gaps = [later - earlier for earlier, later in itertools.pairwise(peer.attempts)]
    print(f"pushback {pushback}: {len(peer.attempts)} attempts, gaps {gaps}")
    assert len(peer.attempts) == (2 if retried else 1)
    if retried:
        assert least_gap_s <= gaps[0] <= most_gap_s


async def test_the_callers_deadline_reaches_the_replica_and_bounds_the_call(
    tmp_path: Path,
) -> None:
    """grpc-timeout passes through Envoy to the replica (which bounds its SageMaker call by
    it), and Envoy ends the call at that deadline even when the replica does not."""
    remaining: list[float | None] = []

    async def invoke(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        remaining.append(context.time_remaining())
        if len(remaining) > 1:
            await asyncio.sleep(30)  # a replica that ignores its deadline
        return invoke_pb2.InvokeResponse(body=request).SerializeToString()

    async with grpc_peer(invoke) as port:
        with running_envoy(loopback_config([port]), tmp_path) as envoy:
            async with grpc.aio.insecure_channel(envoy.target) as channel:
                stub = inference_service_pb2_grpc.InferenceServiceStub(channel)
                request = invoke_pb2.InvokeRequest(model="echo", body=b"{}")
                await stub.Invoke(request, timeout=7)
                started = time.monotonic()
                with pytest.raises(grpc.aio.AioRpcError) as failed:
                    await stub.Invoke(request, timeout=1)
                took = time.monotonic() - started
    print(f"deadline seen by the replica: {remaining}; 1 s call ended after {took:.2f}s")
    assert remaining[0] is not None
    assert 5.0 < remaining[0] <= 7.0
    assert failed.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert took < 5.0
