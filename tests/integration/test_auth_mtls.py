"""Callers identified by their mTLS client certificate: the SPIFFE ID (URI SAN), else the first
DNS SAN; certificates naming no one, or two SPIFFE IDs, are refused; a token sent over an mTLS
connection is judged on its own."""

from __future__ import annotations

import ssl
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import pytest
import pytest_asyncio
import trustme
from auth_support import AUTH_ROUTES, bearer, invoke, invoke_failure
from security_support import Issuer, Pem, issue_client, tls_channel, write_server_files

from sagewire.emulator.server import RunningEmulator
from support import Sagewire, settings_for, start_sagewire

pytestmark = pytest.mark.asyncio(loop_scope="session")

ROUTES = {**AUTH_ROUTES, "echo-open": {"endpoint": "echo", "callers": ["dns:batch.internal"]}}


class Mtls:
    def __init__(self, sw: Sagewire, server_ca: trustme.CA, client_ca: trustme.CA) -> None:
        self.sw, self.server_ca, self.client_ca = sw, server_ca, client_ca

    def channel(self, client: Pem) -> grpc.aio.Channel:
        return tls_channel(self.sw.server.port, self.server_ca, client)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def mtls(
    emulator: RunningEmulator, issuer: Issuer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Mtls]:
    directory: Path = tmp_path_factory.mktemp("mtls")
    server_ca, client_ca = trustme.CA(), trustme.CA()
    settings = settings_for(
        emulator,
        routes=ROUTES,
        server={"tls": write_server_files(directory, server_ca, client_ca)},
        auth={"mtls": True, "jwt": issuer.jwt_settings()},
    )
    async with start_sagewire(emulator, settings) as sw:
        yield Mtls(sw, server_ca, client_ca)


async def test_spiffe_id_is_the_principal(mtls: Mtls) -> None:
    spiffe = issue_client(
        mtls.client_ca,
        uris=["https://not-spiffe.example/x", "spiffe://example.org/ns/checkout/sa/api"],
        dns=["api.checkout.internal"],
    )
    async with mtls.channel(spiffe) as channel:
        assert await invoke(channel) == b'{"a":1}'
        denied = await invoke_failure(channel, model="echo-open")
        assert denied.code == grpc.StatusCode.PERMISSION_DENIED
        assert "spiffe://example.org/ns/checkout/sa/api may not call" in denied.message


async def test_first_dns_name_is_the_principal_without_a_spiffe_id(mtls: Mtls) -> None:
    dns = issue_client(mtls.client_ca, dns=["batch.internal", "other.internal"])
    async with mtls.channel(dns) as channel:
        assert await invoke(channel, model="echo-open") == b'{"a":1}'
        denied = await invoke_failure(channel)
        assert "dns:batch.internal may not call" in denied.message
    second = issue_client(mtls.client_ca, dns=["other.internal", "batch.internal"])
    async with mtls.channel(second) as channel:
        assert (await invoke_failure(channel, model="echo-open")).reason == "MODEL_NOT_PERMITTED"


@pytest.mark.parametrize(
    ("uris", "dns"),
    [
        pytest.param((), (), id="no-names"),
        pytest.param(("spiffe://example.org/a", "spiffe://example.org/b"), (), id="two-spiffe-ids"),
    ],
)
async def test_certificates_naming_no_single_caller_are_refused(
    mtls: Mtls, uris: tuple[str, ...], dns: tuple[str, ...]
) -> None:
    async with mtls.channel(issue_client(mtls.client_ca, uris=uris, dns=dns)) as channel:
        refused = await invoke_failure(channel)
    assert (refused.code, refused.reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "CERTIFICATE_IDENTITY_MISSING",
    )


async def test_a_token_is_judged_on_its_own_over_mtls(mtls: Mtls, issuer: Issuer) -> None:
    spiffe = issue_client(mtls.client_ca, uris=["spiffe://example.org/ns/checkout/sa/api"])
    async with mtls.channel(spiffe) as channel:
        # A bad token is not excused by a good certificate.
        bad = await invoke_failure(channel, bearer(issuer.token("svc-fraud") + "x"))
        assert bad.code == grpc.StatusCode.UNAUTHENTICATED
        # A good token names the caller, whatever the certificate says.
        other = await invoke_failure(channel, bearer(issuer.token("svc-other")))
        assert "jwt:sub:svc-other may not call" in other.message


async def test_a_certificate_from_another_ca_never_reaches_a_handler(mtls: Mtls) -> None:
    foreign = issue_client(trustme.CA(), uris=["spiffe://example.org/ns/checkout/sa/api"])
    async with mtls.channel(foreign) as channel:
        refused = await invoke_failure(channel)
    assert refused.code == grpc.StatusCode.UNAVAILABLE
    assert refused.reason == ""  # the handshake failed: no sagewire status at all


async def test_the_rest_listener_takes_the_same_client_certificates(mtls: Mtls) -> None:
    spiffe = issue_client(mtls.client_ca, uris=["spiffe://example.org/ns/checkout/sa/api"])
    dns = issue_client(mtls.client_ca, dns=["batch.internal"])
    base = f"https://localhost:{mtls.sw.server.rest_port}"

    async def models(client: Pem | None, tmp: Path) -> tuple[int, list[str]]:
        context = ssl.create_default_context(cadata=mtls.server_ca.cert_pem.bytes().decode())
        if client is not None:
            (tmp / "c.pem").write_bytes(client.cert)
            (tmp / "k.pem").write_bytes(client.key)
            context.load_cert_chain(tmp / "c.pem", tmp / "k.pem")
        connector = aiohttp.TCPConnector(ssl=context, force_close=True)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(base + "/v1/models") as response,
        ):
            doc = await response.json()
            return response.status, [m["name"] for m in doc.get("models", [])]

    with tempfile.TemporaryDirectory() as tmp:
        assert await models(spiffe, Path(tmp)) == (200, ["echo"])
        assert await models(dns, Path(tmp)) == (200, ["echo-open"])
        with pytest.raises(aiohttp.ClientError):  # no certificate: the handshake fails
            await models(None, Path(tmp))
