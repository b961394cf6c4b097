"""TLS and mutual TLS on the gRPC listener, certificate rotation without a restart, and the
plaintext health-only maintenance listener. Real certificates (trustme, made per run) over
real loopback sockets."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc
from security_support import issue_client, replace_atomically, tls_channel, write_server_files

from sagewire.config import ConfigError
from sagewire.emulator.server import RunningEmulator
from sagewire.v1 import inference_service_pb2_grpc, invoke_pb2
from support import start_sagewire

pytestmark = pytest.mark.asyncio(loop_scope="session")

HEALTH = health_pb2.HealthCheckRequest()


async def _health(channel: grpc.aio.Channel) -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(HEALTH, timeout=10)
    return int(reply.status)


async def _invoke(channel: grpc.aio.Channel) -> bytes:
    stub = inference_service_pb2_grpc.InferenceServiceStub(channel)
    reply = await stub.Invoke(invoke_pb2.InvokeRequest(model="echo", body=b'{"a":1}'), timeout=10)
    return bytes(reply.body)


async def _refused(channel: grpc.aio.Channel) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await health_pb2_grpc.HealthStub(channel).Check(HEALTH, timeout=5)
    return caught.value.code()


async def test_tls_listener_serves_tls_and_refuses_plaintext(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    ca = trustme.CA()
    tls = write_server_files(tmp_path, ca, None)
    async with start_sagewire(emulator, server={"tls": tls}) as sw:
        async with tls_channel(sw.server.port, ca) as channel:
            assert await _health(channel) == health_pb2.HealthCheckResponse.SERVING
            assert await _invoke(channel) == b'{"a":1}'
        async with grpc.aio.insecure_channel(sw.target) as plain:
            assert await _refused(plain) == grpc.StatusCode.UNAVAILABLE
        # A client that trusts another CA does not accept the server.
        async with tls_channel(sw.server.port, trustme.CA()) as wrong:
            assert await _refused(wrong) == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_needs_a_certificate_from_the_client_ca(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    server_ca, client_ca = trustme.CA(), trustme.CA()
    tls = write_server_files(tmp_path, server_ca, client_ca)
    good = issue_client(client_ca, uris=["spiffe://example.org/ns/a/sa/b"])
    foreign = issue_client(trustme.CA(), uris=["spiffe://example.org/ns/a/sa/b"])
    async with start_sagewire(emulator, server={"tls": tls}) as sw:
        async with tls_channel(sw.server.port, server_ca, good) as channel:
            assert await _invoke(channel) == b'{"a":1}'
        async with tls_channel(sw.server.port, server_ca) as anonymous:
            assert await _refused(anonymous) == grpc.StatusCode.UNAVAILABLE
        async with tls_channel(sw.server.port, server_ca, foreign) as other_ca:
            assert await _refused(other_ca) == grpc.StatusCode.UNAVAILABLE


async def test_rotated_certificate_is_used_for_new_connections_and_bad_files_are_ignored(
    emulator: RunningEmulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old_ca, new_ca, client_ca = trustme.CA(), trustme.CA(), trustme.CA()
    tls = write_server_files(tmp_path, old_ca, client_ca)
    client = issue_client(client_ca, dns=["client.test"])
    async with start_sagewire(emulator, server={"tls": tls}) as sw:
        kept = tls_channel(sw.server.port, old_ca, client)
        assert await _health(kept) == health_pb2.HealthCheckResponse.SERVING

        # Rotate: a certificate from another CA, key first then certificate (a half-written
        # pair must not be picked up), each replaced atomically.
        fresh = new_ca.issue_cert("localhost", "127.0.0.1")
        replace_atomically(tls["key_file"], fresh.private_key_pem.bytes())
        caplog.set_level(logging.WARNING, "sagewire.tls")
        async with tls_channel(sw.server.port, old_ca, client) as between:
            # Key and certificate disagree: the last good pair keeps serving.
            assert await _health(between) == health_pb2.HealthCheckResponse.SERVING
        assert "does not match the certificate" in caplog.text
        replace_atomically(tls["cert_file"], fresh.cert_chain_pems[0].bytes())
        async with tls_channel(sw.server.port, new_ca, client) as channel:
            assert await _health(channel) == health_pb2.HealthCheckResponse.SERVING
        async with tls_channel(sw.server.port, old_ca, client) as stale:
            assert await _refused(stale) == grpc.StatusCode.UNAVAILABLE
        # The connection made before the rotation still works.
        assert await _invoke(kept) == b'{"a":1}'
        await kept.close(None)

        # A broken certificate file: logged, the last good configuration stays.
        caplog.clear()
        replace_atomically(tls["cert_file"], b"-----BEGIN CERTIFICATE-----\nnot base64\n")
        async with tls_channel(sw.server.port, new_ca, client) as channel:
            assert await _health(channel) == health_pb2.HealthCheckResponse.SERVING
        assert "keeping the last good" in caplog.text
        assert sw.server.tls is not None
        assert sw.server.tls.reloads == 1


async def test_bad_tls_files_fail_start_up_naming_the_problem(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    ca = trustme.CA()
    tls = write_server_files(tmp_path, ca, None)
    other = ca.issue_cert("localhost")
    other.private_key_pem.write_to_path(tls["key_file"])
    with pytest.raises(ConfigError, match="does not match the certificate"):
        async with start_sagewire(emulator, server={"tls": tls}):
            pass
    missing = {**tls, "cert_file": str(tmp_path / "absent.pem")}
    with pytest.raises(ConfigError, match=r"cannot read .*absent\.pem"):
        async with start_sagewire(emulator, server={"tls": missing}):
            pass


async def test_maintenance_listener_is_plaintext_health_only(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    server_ca, client_ca = trustme.CA(), trustme.CA()
    tls = write_server_files(tmp_path, server_ca, client_ca)
    server = {"tls": tls, "maintenance_listen": "127.0.0.1:0"}
    async with start_sagewire(emulator, server=server) as sw:
        port = sw.server.maintenance_port
        assert port not in (0, sw.server.port)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as plain:
            assert await _health(plain) == health_pb2.HealthCheckResponse.SERVING
            service = "sagewire.v1.InferenceService"
            reply = await health_pb2_grpc.HealthStub(plain).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=10
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _invoke(plain)
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
        # Health turns NOT_SERVING on both listeners while stopping.
        await sw.server.health.enter_graceful_shutdown()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as plain:
            assert await _health(plain) == health_pb2.HealthCheckResponse.NOT_SERVING
