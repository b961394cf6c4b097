"""What authentication and authorisation cost per unary call, and what an mTLS handshake costs.

    python -m bench.auth_ab [--rounds 6] [--seconds 4] [--connections 200]

Three `sagewire serve` processes on one emulator, same routes: **A** without authentication;
**B** with JWT bearer tokens (RS256, verified against a JWKS this process serves over HTTP) and
the `echo` route restricted to the caller (`callers`); **C** like B plus per-caller and
per-caller-route quotas. Every round runs the same closed-loop unary load (1 KB JSON, 16 in
flight; bench.loads "unary") against each, in rotating order, and the decision metric is each
sagewire process's own CPU per call (psutil user + system), which a busy neighbour disturbs far
less than throughput. The JWKS cache is warm (the first call of the warm-up fetched it) and
every call carries the same token, as a service holding one token until it expires does.

The handshake: a fourth process **M** serves mutual TLS (demo certificates, ECDSA P-256). From
this process, `--connections` fresh channels each make one Invoke, first against A (plaintext)
then against M; the difference in sagewire CPU and in wall time per connection is the cost of
the TLS 1.3 handshake with client-certificate verification.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from bench.configs import SAGEWIRE_TOML, write_configs
from bench.loads import load_job
from bench.run import log, run_loadgen
from bench.services import REPO, Service, Services
from sagewire.v1 import inference_service_pb2_grpc, invoke_pb2

ISSUER, AUDIENCE, SUBJECT = "https://issuer.bench", "sagewire-bench", "bench"


@asynccontextmanager
async def jwks_server(key: rsa.RSAPrivateKey) -> AsyncIterator[str]:
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    doc = {"keys": [{**public, "kid": "bench", "use": "sig", "alg": "RS256"}]}

    async def serve(request: web.Request) -> web.Response:
        return web.json_response(doc, headers={"Cache-Control": "max-age=3600"})

    app = web.Application()
    app.router.add_get("/jwks.json", serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/jwks.json"
    finally:
        await runner.cleanup()


def _with_auth(jwks_url: str, quotas: bool) -> str:
    auth = f"""
[auth.jwt]
jwks_url = "{jwks_url}"
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
"""
    limits = """
[quotas.per_caller]
rps = 1000000
max_concurrency = 100000

[quotas.per_caller_route]
rps = 1000000
max_concurrency = 100000
"""
    routes = SAGEWIRE_TOML.replace(
        'endpoint = "echo"\n', f'endpoint = "echo"\ncallers = ["jwt:sub:{SUBJECT}"]\n', 1
    )
    return routes + auth + (limits if quotas else "")


def _with_mtls(certs: Path) -> str:
    return (
        SAGEWIRE_TOML
        + f"""
[server.tls]
cert_file = "{certs}/server.pem"
key_file = "{certs}/server-key.pem"
client_ca_file = "{certs}/ca.pem"
"""
    )


async def _unary_rounds(
    services: Services, targets: dict[str, tuple[Service, list[list[str]]]], rounds: int, s: float
) -> dict[str, list[float]]:
    cpu: dict[str, list[float]] = {name: [] for name in targets}
    names = list(targets)
    for turn in range(rounds):
        order = names[turn % len(names) :] + names[: turn % len(names)]
        for name in order:
            service, metadata = targets[name]
            job = load_job("unary", service.address, s, warmup_s=0.5)
            job["metadata"] = metadata
            for result in await run_loadgen(
                job, {"server": service}, s + 20, ours=services.running
            ):
                calls = max(result["items"], 1)
                cpu[name].append(result["server_cpu_s"] / calls * 1e6)
                log(
                    f"  {name}: {result['items_per_s']:.0f} calls/s, "
                    f"{cpu[name][-1]:.0f} µs CPU per call, {result.get('errors', 0)} errors"
                )
    return cpu


async def _connect_calls(
    service: Service, count: int, credentials: grpc.ChannelCredentials | None
) -> tuple[float, float]:
    """(sagewire CPU µs, wall ms) per fresh connection making one Invoke."""
    request = invoke_pb2.InvokeRequest(model="echo", body=b'{"a":1}')
    options = [("grpc.use_local_subchannel_pool", 1)]
    cpu_before, started = service.cpu_s(), time.perf_counter()
    for _ in range(count):
        channel = (
            grpc.aio.secure_channel(
                service.address.replace("127.0.0.1", "localhost"), credentials, options=options
            )
            if credentials is not None
            else grpc.aio.insecure_channel(service.address, options=options)
        )
        async with channel:
            await inference_service_pb2_grpc.InferenceServiceStub(channel).Invoke(request)
    wall = time.perf_counter() - started
    return (service.cpu_s() - cpu_before) / count * 1e6, wall / count * 1e3


async def _layer_cost(jwks_url: str, token: str, quotas: bool, calls: int = 20_000) -> float:
    """CPU µs per call of the security layer alone, in this process with a warm JWKS cache:
    reading the credentials from metadata, authentication, the route check (and quotas), and
    the end of the call. What B and C add to A, without the noise of a shared machine."""
    import tomllib

    from sagewire.config import load_settings
    from sagewire.security.guard import Security
    from sagewire.security.principal import Credentials

    settings = load_settings(overrides=tomllib.loads(_with_auth(jwks_url, quotas)))
    security = Security(settings)
    metadata = (("user-agent", "grpc-python"), ("authorization", f"Bearer {token}"))
    try:
        started = time.process_time()
        for _ in range(calls):
            authorization = tuple(v for k, v in metadata if k == "authorization")
            credentials = Credentials(authorization=authorization, method="/x/Invoke")
            scope = await security.enter(credentials)
            security.admit("echo")
            assert scope is not None
            scope.close()
        return (time.process_time() - started) / calls * 1e6
    finally:
        await security.close()


async def main(rounds: int, seconds: float, connections: int) -> None:
    from tools.demo_certs import main as demo_certs  # the walkthrough's certificates

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(
        {"iss": ISSUER, "aud": AUDIENCE, "sub": SUBJECT, "exp": int(time.time()) + 86_400},
        key,
        algorithm="RS256",
        headers={"kid": "bench"},
    )
    with tempfile.TemporaryDirectory(prefix="sagewire-auth-ab-") as directory:
        root = Path(directory)
        emulator_config, plain = write_configs(root)
        demo_certs(root / "certs")
        async with jwks_server(key) as jwks_url, Services() as services:
            (root / "b.toml").write_text(_with_auth(jwks_url, quotas=False))
            (root / "c.toml").write_text(_with_auth(jwks_url, quotas=True))
            (root / "m.toml").write_text(_with_mtls(root / "certs"))
            layer = (
                await _layer_cost(jwks_url, token, quotas=False),
                await _layer_cost(jwks_url, token, quotas=True),
            )
            emulator = await services.emulator(emulator_config)
            a = await services.sagewire(plain, emulator.address, name="A")
            b = await services.sagewire(root / "b.toml", emulator.address, name="B")
            c = await services.sagewire(root / "c.toml", emulator.address, name="C")
            bearer = [["authorization", f"Bearer {token}"]]
            cpu = await _unary_rounds(
                services, {"A": (a, []), "B": (b, bearer), "C": (c, bearer)}, rounds, seconds
            )
            m = await services.sagewire(root / "m.toml", emulator.address, name="M")
            certs = root / "certs"
            credentials = grpc.ssl_channel_credentials(
                (certs / "ca.pem").read_bytes(),
                (certs / "client-key.pem").read_bytes(),
                (certs / "client.pem").read_bytes(),
            )
            plain_conn = await _connect_calls(a, connections, None)
            mtls_conn = await _connect_calls(m, connections, credentials)
    _report(cpu, layer, plain_conn, mtls_conn, rounds, seconds, connections)


def _report(
    cpu: dict[str, list[float]],
    layer: tuple[float, float],
    plain: tuple[float, float],
    mtls: tuple[float, float],
    rounds: int,
    seconds: float,
    connections: int,
) -> None:
    base = statistics.median(cpu["A"])
    print(f"\nUnary Invoke, 1 KB, 16 in flight; {rounds} rounds of {seconds:g} s each, median:")
    print("| sagewire | CPU per call | vs A |\n|---|---|---|")
    labels = {"A": "A: no auth", "B": "B: JWT + callers", "C": "C: JWT + callers + quotas"}
    for name, values in cpu.items():
        median = statistics.median(values)
        print(f"| {labels[name]} | {median:.0f} µs | {100 * (median / base - 1):+.1f} % |")
    print("\nThe security layer alone, in-process, warm JWKS cache (20,000 calls):")
    print("| layer | CPU per call | share of A's CPU per call |\n|---|---|---|")
    for label, value in (("JWT + callers", layer[0]), ("JWT + callers + quotas", layer[1])):
        print(f"| {label} | {value:.1f} µs | {100 * value / base:.2f} % |")
    print(f"\nA fresh connection making one Invoke ({connections} in a row):")
    print("| listener | sagewire CPU per connection | wall per connection |\n|---|---|---|")
    print(f"| plaintext | {plain[0]:.0f} µs | {plain[1]:.2f} ms |")
    print(f"| mTLS (TLS 1.3, P-256 client certificate) | {mtls[0]:.0f} µs | {mtls[1]:.2f} ms |")
    print(
        f"| handshake cost (difference) | {mtls[0] - plain[0]:.0f} µs | "
        f"{mtls[1] - plain[1]:.2f} ms |"
    )


def _args() -> Any:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--connections", type=int, default=200)
    return parser.parse_args()


if __name__ == "__main__":
    args = _args()
    assert REPO.is_dir()
    asyncio.run(main(args.rounds, args.seconds, args.connections))
