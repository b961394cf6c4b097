"""Test helpers for security: a CA per run (trustme), client certificates with SPIFFE IDs,
TLS files on disk, TLS channels, and a JWKS issuer served over real HTTP with keys the test
makes and rotates."""

from __future__ import annotations

import asyncio
import datetime
import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import jwt
import trustme
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ISSUER = "https://issuer.test"
AUDIENCE = "sagewire-test"


@dataclass(frozen=True)
class Pem:
    cert: bytes
    key: bytes


def issue_client(
    ca: trustme.CA, uris: Sequence[str] = (), dns: Sequence[str] = (), days: int = 1
) -> Pem:
    """A client certificate signed by `ca` with URI SANs (SPIFFE IDs) and DNS SANs: trustme
    issues DNS/IP names only, so the leaf is made here with `cryptography` and the CA's key."""
    ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), None)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
    names += [x509.DNSName(d) for d in dns]
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "test client")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    return Pem(
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def write_server_files(
    directory: Path, ca: trustme.CA, client_ca: trustme.CA | None
) -> dict[str, str]:
    """The `[server.tls]` table of a server certificate for localhost/127.0.0.1 from `ca`."""
    directory.mkdir(parents=True, exist_ok=True)
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(directory / "server.pem"))
    cert.private_key_pem.write_to_path(str(directory / "server-key.pem"))
    tls: dict[str, Any] = {
        "cert_file": str(directory / "server.pem"),
        "key_file": str(directory / "server-key.pem"),
        "reload_check_s": 0,
    }
    if client_ca is not None:
        client_ca.cert_pem.write_to_path(str(directory / "ca.pem"))
        tls["client_ca_file"] = str(directory / "ca.pem")
    return tls


def replace_atomically(path: str | Path, data: bytes) -> None:
    """Rotation as operators do it (and Kubernetes secret volumes): write aside, rename over."""
    target = Path(path)
    aside = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
    aside.write_bytes(data)
    aside.replace(target)


def tls_channel(port: int, ca: trustme.CA, client: Pem | None = None) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(
        ca.cert_pem.bytes(),
        client.key if client else None,
        client.cert if client else None,
    )
    return grpc.aio.secure_channel(
        f"127.0.0.1:{port}",
        credentials,
        # A fresh connection per channel (no subchannel sharing), so each channel's handshake
        # is its own and sees the certificate in use when it connects.
        options=[("grpc.use_local_subchannel_pool", 1)],
    )


@dataclass
class Issuer:
    """A JWT issuer: signing keys by kid, a JWKS served over HTTP, and token minting."""

    url: str = ""
    keys: dict[str, Any] = field(default_factory=dict)
    published: list[str] = field(default_factory=list)
    cache_control: str = "max-age=300"
    requests: int = 0
    delay_s: float = 0.0  # how long each JWKS answer takes (a slow identity provider)

    def add_key(self, kid: str, kind: str = "RSA") -> None:
        self.keys[kid] = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            if kind == "RSA"
            else ec.generate_private_key(ec.SECP256R1())
        )
        self.published.append(kid)

    def jwks(self) -> dict[str, Any]:
        out = []
        for kid in self.published:
            key = self.keys[kid]
            algorithm = (
                jwt.algorithms.RSAAlgorithm
                if isinstance(key, rsa.RSAPrivateKey)
                else jwt.algorithms.ECAlgorithm
            )
            jwk = json.loads(algorithm.to_jwk(key.public_key()))
            jwk |= {"kid": kid, "use": "sig"}
            out.append(jwk)
        return {"keys": out}

    def token(
        self,
        sub: str = "svc-a",
        kid: str | None = None,
        alg: str | None = None,
        claims: Mapping[str, Any] | None = None,
        headers: Mapping[str, Any] | None = None,
        ttl_s: float = 300,
    ) -> str:
        kid = kid or self.published[0]
        key = self.keys[kid]
        alg = alg or ("RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256")
        now = int(time.time())
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + int(ttl_s)}
        body |= dict(claims or {})
        return jwt.encode(body, key, algorithm=alg, headers={"kid": kid, **(headers or {})})

    def jwt_settings(self, **extra: Any) -> dict[str, Any]:
        return {
            "jwks_url": self.url,
            "issuer": ISSUER,
            "audience": AUDIENCE,
            "jwks_refresh_min_interval_s": 0,
            **extra,
        }


@asynccontextmanager
async def running_issuer() -> AsyncIterator[Issuer]:
    """An Issuer with one RSA key ("k1"), its JWKS served on a free loopback port."""
    issuer = Issuer()
    issuer.add_key("k1")

    async def jwks(request: web.Request) -> web.Response:
        issuer.requests += 1
        await asyncio.sleep(issuer.delay_s)
        return web.json_response(issuer.jwks(), headers={"Cache-Control": issuer.cache_control})

    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", jwks)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    issuer.url = f"http://127.0.0.1:{port}/.well-known/jwks.json"
    try:
        yield issuer
    finally:
        await runner.cleanup()
