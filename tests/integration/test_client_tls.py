"""sagewire.client over TLS and mutual TLS, with bearer tokens, against sagewire's own security
layer: the client's connection options (CA file, client certificate, token source) do what
docs/client.md says, and failures arrive as the documented exceptions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
import pytest_asyncio
import trustme
from security_support import Issuer, issue_client, write_server_files

from sagewire.client import (
    AsyncClient,
    ChannelOptions,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from sagewire.emulator.server import RunningEmulator
from support import Sagewire, settings_for, start_sagewire

pytestmark = pytest.mark.asyncio(loop_scope="session")

SPIFFE = "spiffe://example.org/ns/checkout/sa/api"
ROUTES = {
    "echo": {"endpoint": "echo", "callers": [SPIFFE, "jwt:sub:svc-fraud"]},
    "echo-closed": {"endpoint": "echo", "callers": ["jwt:sub:someone-else"]},
}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def secured(
    emulator: RunningEmulator, issuer: Issuer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Sagewire, Path, trustme.CA]]:
    """sagewire requiring client certificates from `client_ca`, and accepting JWTs too."""
    directory = tmp_path_factory.mktemp("client-tls")
    server_ca, client_ca = trustme.CA(), trustme.CA()
    server_ca.cert_pem.write_to_path(str(directory / "server-ca.pem"))
    settings = settings_for(
        emulator,
        routes=ROUTES,
        server={"tls": write_server_files(directory, server_ca, client_ca)},
        auth={"mtls": True, "jwt": issuer.jwt_settings()},
    )
    async with start_sagewire(emulator, settings) as sw:
        yield sw, directory, client_ca


async def test_mutual_tls_identifies_the_caller(
    secured: tuple[Sagewire, Path, trustme.CA], tmp_path: Path
) -> None:
    sw, directory, client_ca = secured
    pem = issue_client(client_ca, uris=[SPIFFE])
    (tmp_path / "client.pem").write_bytes(pem.cert)
    (tmp_path / "client-key.pem").write_bytes(pem.key)
    async with AsyncClient(
        f"127.0.0.1:{sw.server.port}",
        ca_file=directory / "server-ca.pem",
        cert_file=tmp_path / "client.pem",
        key_file=tmp_path / "client-key.pem",
        timeout=20,
    ) as client:
        assert (await client.invoke("echo", json={"a": 1})).json() == {"a": 1}
        with pytest.raises(PermissionDenied):
            await client.invoke("echo-closed", json={})


async def test_a_token_source_is_sent_on_every_call(
    secured: tuple[Sagewire, Path, trustme.CA], issuer: Issuer, tmp_path: Path
) -> None:
    sw, directory, client_ca = secured
    pem = issue_client(client_ca, dns=["batch.internal"])  # mTLS still required to connect
    (tmp_path / "client.pem").write_bytes(pem.cert)
    (tmp_path / "client-key.pem").write_bytes(pem.key)
    options = ChannelOptions(
        target=f"127.0.0.1:{sw.server.port}",
        ca_file=directory / "server-ca.pem",
        cert_file=tmp_path / "client.pem",
        key_file=tmp_path / "client-key.pem",
        timeout=20,
    )

    async def fresh_token() -> str:
        return issuer.token(sub="svc-fraud")

    async with AsyncClient(options=replace(options, token=fresh_token)) as c:
        assert (await c.invoke("echo", json={"b": 2})).json() == {"b": 2}
    async with AsyncClient(options=replace(options, token="not-a-jwt")) as c:
        with pytest.raises(Unauthenticated):
            await c.invoke("echo", json={})


async def test_an_untrusted_server_is_unavailable_not_a_hang(
    secured: tuple[Sagewire, Path, trustme.CA],
) -> None:
    sw, _, _ = secured
    async with AsyncClient(f"127.0.0.1:{sw.server.port}", tls=True, timeout=5) as client:
        with pytest.raises(Unavailable):
            await client.models()
