"""The emulator endpoints and sagewire routes the benchmark uses, written as TOML files.

sagewire runs with its defaults except where a benchmark needs room: the per-route concurrency
bound and the AWS connection pool are raised so 1,000 held calls really are in flight upstream
(docs/configuration.md: keep the pool at least as high as the calls expected in flight).
"""

from __future__ import annotations

from pathlib import Path

HELD_COUNT = 1000
POOL = 1024
ROUTE_CONCURRENCY = 4096

EMULATOR_TOML = """\
[endpoints.echo]
model = "echo"

[endpoints.tokens]
model = "tokens"

[endpoints.firehose]
model = "firehose"

# Holds every unary call for a minute: memory with calls in flight.
[endpoints.held]
model = "echo"
[endpoints.held.fault]
latency_ms = 60000

# Sends one part, then keeps the stream open until the caller leaves: memory with open streams.
[endpoints.stall]
model = "tokens"
[endpoints.stall.fault]
stall_after_parts = 1
"""

SAGEWIRE_TOML = f"""\
[server]
shutdown_grace_s = 1

[aws]
region = "us-east-1"
max_pool_connections = {POOL}

[routes.echo]
endpoint = "echo"
max_concurrency = {ROUTE_CONCURRENCY}

[routes.held]
endpoint = "held"
timeout_s = 70
max_concurrency = {ROUTE_CONCURRENCY}

[routes.tokens-raw]
endpoint = "tokens"
mode = "stream"
framing = "raw"
max_concurrency = {ROUTE_CONCURRENCY}

[routes.firehose]
endpoint = "firehose"
mode = "stream"
framing = "raw"
timeout_s = 300
max_concurrency = {ROUTE_CONCURRENCY}

[routes.stall]
endpoint = "stall"
mode = "stream"
framing = "raw"
timeout_s = 300
max_concurrency = {ROUTE_CONCURRENCY}
"""


def write_configs(directory: Path) -> tuple[Path, Path]:
    """(emulator config, sagewire config) written into `directory`."""
    emulator = directory / "emulator.toml"
    sagewire = directory / "sagewire.toml"
    emulator.write_text(EMULATOR_TOML, encoding="utf-8")
    sagewire.write_text(SAGEWIRE_TOML, encoding="utf-8")
    return emulator, sagewire
