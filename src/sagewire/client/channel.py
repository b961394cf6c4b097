"""How the client reaches sagewire: target, TLS, credentials, limits and the retry policy.

The retry policy is gRPC's own (a service config handed to the channel), not a loop of ours:
gRPC retries only before the call is committed (before any response header or message reached
the client), inside the call's deadline, honours the server's `grpc-retry-pushback-ms`
trailer, and throttles retries channel-wide when most calls fail (retryThrottling). sagewire
answers UNAVAILABLE only when retrying the same request may succeed (docs/errors.md), so that
is the one code retried.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

# The recommended client service config for sagewire (docs/client.md shows it as JSON).
# maxAttempts counts the first call; backoff is randomised in [0, current backoff] by gRPC.
RETRY_SERVICE_CONFIG: dict[str, Any] = {
    "methodConfig": [
        {
            "name": [
                {"service": "sagewire.v1.InferenceService"},
                {"service": "sagewire.v1.ModelService"},
            ],
            "retryPolicy": {
                "maxAttempts": 4,
                "initialBackoff": "0.2s",
                "maxBackoff": "5s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ],
    # Stop retrying when failures outweigh successes (tokens: +0.1 per success, -1 per failure;
    # retries stop below maxTokens / 2).
    "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
}

# A bearer token, or something that returns one (called before every call; may be async).
TokenSource = str | Callable[[], str] | Callable[[], Awaitable[str]]

ENV_TARGET = "SAGEWIRE_TARGET"
DEFAULT_TARGET = "127.0.0.1:50051"


@dataclass(frozen=True)
class ChannelOptions:
    """Everything about the connection, with the defaults a backend service wants.

    Attributes:
        target: "host:port" (default: $SAGEWIRE_TARGET, else 127.0.0.1:50051).
        tls: use TLS (implied by any of the files below).
        ca_file: PEM bundle to trust instead of the system roots.
        cert_file / key_file: PEM client certificate and key for mutual TLS.
        server_name: TLS name to check instead of the target's host (tests, IP targets).
        token: bearer token source, sent as `authorization: Bearer …` on every call.
        timeout: default deadline of every call, in seconds (None: no deadline).
        retries: use RETRY_SERVICE_CONFIG (True) or no retries at all (False).
        keepalive_s: send HTTP/2 pings on an active connection after this much silence.
        max_message_bytes: largest message sent or received (sagewire's default is 8 MiB).
    """

    target: str = field(default_factory=lambda: os.environ.get(ENV_TARGET, DEFAULT_TARGET))
    tls: bool = False
    ca_file: str | Path | None = None
    cert_file: str | Path | None = None
    key_file: str | Path | None = None
    server_name: str | None = None
    token: TokenSource | None = None
    timeout: float | None = 30.0
    retries: bool = True
    keepalive_s: float = 30.0
    max_message_bytes: int = 8 * 1024 * 1024

    @property
    def uses_tls(self) -> bool:
        return self.tls or any((self.ca_file, self.cert_file, self.key_file))

    def grpc_options(self) -> list[tuple[str, Any]]:
        options: list[tuple[str, Any]] = [
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.keepalive_time_ms", int(self.keepalive_s * 1000)),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.enable_retries", 1 if self.retries else 0),
        ]
        if self.retries:
            options.append(("grpc.service_config", json.dumps(RETRY_SERVICE_CONFIG)))
        if self.server_name:
            options.append(("grpc.ssl_target_name_override", self.server_name))
        return options

    def credentials(self) -> grpc.ChannelCredentials:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("mutual TLS needs both cert_file and key_file")
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file),
            private_key=_read(self.key_file),
            certificate_chain=_read(self.cert_file),
        )

    def aio_channel(self) -> grpc.aio.Channel:
        if self.uses_tls:
            return grpc.aio.secure_channel(
                self.target, self.credentials(), options=self.grpc_options()
            )
        return grpc.aio.insecure_channel(self.target, options=self.grpc_options())


def _read(path: str | Path | None) -> bytes | None:
    return Path(path).read_bytes() if path else None
