"""What a deployment does not use is not loaded: without TLS, JWT or OTLP the server process
never imports `cryptography` (OpenSSL bindings, ~8 MB of RSS), PyJWT or the OpenTelemetry SDK
and exporters (docs/benchmarks.md, idle memory). Checked in a fresh interpreter: this one has
them all loaded by other tests."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = """
import asyncio, sys
from sagewire.config.settings import Settings
from sagewire.transports.grpc.server import SagewireServer

async def main() -> None:
    settings = Settings.model_validate({
        "server": {"listen": "127.0.0.1:0"},
        "rest": {"listen": "127.0.0.1:0"},
        "telemetry": {"metrics_listen": "127.0.0.1:0"},
        "aws": {"region": "us-east-1", "runtime_endpoint_url": "http://127.0.0.1:9"},
        "routes": {"echo": {"endpoint": "echo"}},
    })
    async with SagewireServer(settings):
        pass

asyncio.run(main())
unused = ("cryptography", "jwt", "opentelemetry.sdk", "opentelemetry.exporter")
print(sorted({m.split(".")[0] for m in sys.modules if m.startswith(unused)}))
"""


def test_a_plain_server_loads_no_tls_jwt_or_otel_sdk() -> None:
    # No OTEL_* (they would ask for the SDK); the rest as this process has it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env |= {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        check=False,
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
