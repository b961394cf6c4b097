"""Test helpers: the emulator endpoints and sagewire routes tests use, server start-up, and
reading rich error details off a failed call."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import grpc
import pytest
from google.protobuf import message as pb_message
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2_grpc

from sagewire.config import Settings, load_settings
from sagewire.config.settings import AwsSettings
from sagewire.core.errors import SagewireError
from sagewire.emulator.config import EmulatorConfig, EndpointConfig
from sagewire.emulator.faults import Fault
from sagewire.emulator.server import RunningEmulator
from sagewire.transports.grpc.server import SagewireServer
from sagewire.transports.grpc.status import to_grpc_status
from sagewire.v1 import common_pb2, inference_service_pb2_grpc, model_service_pb2_grpc

# End-of-stream marker of grpc.aio's read(); grpc-stubs predates it.
EOF: object = grpc.aio.EOF  # type: ignore[attr-defined]

TEST_EMULATOR_CONFIG = EmulatorConfig(
    endpoints={
        "echo": EndpointConfig(model="echo", variants=["AllTraffic", "B"]),
        "tokens": EndpointConfig(model="tokens"),
        "sse-tokens": EndpointConfig(model="sse-tokens"),
        "firehose": EndpointConfig(model="firehose"),
        "chat": EndpointConfig(model="chat"),
        # Faults are set per test with emulator.set_fault().
        "faulty": EndpointConfig(model="echo"),
        "faulty-stream": EndpointConfig(model="tokens"),
        "slow-echo": EndpointConfig(model="echo", fault=Fault(latency_ms=1000)),
        # HTTP/2 bidirectional streams (the emulator's bidi listener).
        "bidi-echo": EndpointConfig(model="bidi-echo", variants=["AllTraffic", "B"]),
    }
)

# Circuit breaker and cold-start waits off: the fault tests share the `faulty` routes and each
# sees its error as the emulator sent it (tests/integration/test_resilience.py turns them on).
AS_SENT: dict[str, Any] = {
    "circuit_breaker": {"enabled": False},
    "cold_start": {"enabled": False},
}

TEST_ROUTES: dict[str, dict[str, Any]] = {
    "echo": {
        "endpoint": "echo",
        "allow": ["custom_attributes", "target_variant", "inference_id", "session_id"],
    },
    "echo-strict": {"endpoint": "echo"},
    "faulty": {"endpoint": "faulty", **AS_SENT},
    "slow-echo": {"endpoint": "slow-echo", "timeout_s": 30},
    "slow-echo-short": {"endpoint": "slow-echo", "timeout_s": 0.3},
    "single-file": {"endpoint": "slow-echo", "max_concurrency": 1},
    "missing": {"endpoint": "no-such-endpoint"},
    "tokens": {
        "endpoint": "tokens",
        "mode": "stream",
        "framing": "lines",
        "allow": ["framing", "custom_attributes"],
        "timeout_s": 60,
    },
    "tokens-raw": {"endpoint": "tokens", "mode": "stream", "framing": "raw"},
    "firehose": {"endpoint": "firehose", "mode": "stream", "framing": "raw"},
    "faulty-stream": {
        **AS_SENT,
        "endpoint": "faulty-stream",
        "mode": "stream",
        "framing": "lines",
        "timeout_s": 60,
    },
    "async-only": {
        "endpoint": "echo",
        "mode": "async",
        "async": {"output_prefix": "s3://sagewire-emulator/async-output/"},
    },
    "bidi-echo": {"endpoint": "bidi-echo", "mode": "bidi", "allow": ["target_variant"]},
}


# The credentials tests/conftest.py puts in the environment, which the test emulators verify
# SigV4 signatures against (running_emulator(verify_sigv4=...)).
TEST_SIGV4_KEYS = {"test": "test"}

# The SageMaker Runtime clients (aws.client). Modules that touch InvokeEndpoint or response
# streams run over both with `pytestmark = BOTH_AWS_CLIENTS` (tests/conftest.py's aws_client).
AWS_CLIENTS = ("lean", "aioboto3")
BOTH_AWS_CLIENTS = pytest.mark.parametrize("aws_client", AWS_CLIENTS, scope="module")


class _ServersUse:
    """The aws.client of the servers settings_for makes (set per module by tests/conftest.py)."""

    aws_client: str = str(AwsSettings.model_fields["client"].default)


def use_aws_client(client: str) -> str:
    """Make settings_for use `client` from now on; returns the one used until now."""
    previous, _ServersUse.aws_client = _ServersUse.aws_client, client
    return previous


def default_aws_client() -> str:
    return str(AwsSettings.model_fields["client"].default)


# Async routes need a job-id key; tests share this one (32 bytes, base64).
TEST_JOB_ID_KEY = "dGVzdC1vbmx5LWpvYi1pZC1rZXktMzItYnl0ZXMtbG9uZw=="


def settings_for(
    runtime: str | RunningEmulator,
    routes: Mapping[str, Mapping[str, Any]] | None = None,
    server: Mapping[str, Any] | None = None,
    aws: Mapping[str, Any] | None = None,
    async_jobs: Mapping[str, Any] | None = None,
    rest: Mapping[str, Any] | None = None,
    telemetry: Mapping[str, Any] | None = None,
    auth: Mapping[str, Any] | None = None,
    quotas: Mapping[str, Any] | None = None,
) -> Settings:
    return load_settings(
        overrides={
            "telemetry": dict(telemetry or {}),
            "server": {"listen": "127.0.0.1:0", "shutdown_grace_s": 5, **(server or {})},
            # The REST bridge on a free port too, unless a test turns it off.
            "rest": {"listen": "127.0.0.1:0", **(rest or {})},
            # One attempt: tests see each upstream error exactly as the emulator sent it.
            "aws": {
                **_aws_for(runtime),
                "max_attempts": 1,
                "client": _ServersUse.aws_client,
                **(aws or {}),
            },
            "async_jobs": {"job_id_keys": [TEST_JOB_ID_KEY], **(async_jobs or {})},
            "routes": dict(routes if routes is not None else TEST_ROUTES),
            "auth": dict(auth or {}),
            "quotas": dict(quotas or {}),
        }
    )


def _aws_for(runtime: str | RunningEmulator) -> dict[str, Any]:
    """The emulator's endpoints: its URL, or all of it (HTTP/2 bidi listener and its CA too)."""
    if isinstance(runtime, str):
        return {"runtime_endpoint_url": runtime, "control_endpoint_url": runtime}
    aws: dict[str, Any] = {"runtime_endpoint_url": runtime.url, "control_endpoint_url": runtime.url}
    if runtime.bidi_url is not None:
        aws |= {"bidi_endpoint_url": runtime.bidi_url, "ca_bundle": str(runtime.ca_file)}
    return aws


@dataclass
class Sagewire:
    """A running sagewire server and stubs on one channel to it."""

    server: SagewireServer
    channel: grpc.aio.Channel
    target: str
    inference: inference_service_pb2_grpc.InferenceServiceAsyncStub = field(init=False)
    models: model_service_pb2_grpc.ModelServiceAsyncStub = field(init=False)
    health: Any = field(init=False)  # grpc_health ships no async stub types

    @property
    def rest_url(self) -> str:
        """Base URL of the REST bridge (http://127.0.0.1:PORT)."""
        return f"http://127.0.0.1:{self.server.rest_port}"

    def __post_init__(self) -> None:
        self.inference = inference_service_pb2_grpc.InferenceServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)


@asynccontextmanager
async def start_sagewire(
    runtime: str | RunningEmulator, settings: Settings | None = None, **kwargs: Any
) -> AsyncIterator[Sagewire]:
    """sagewire on a free port; pass the emulator itself (not its URL) for bidi routes."""
    server = SagewireServer(settings or settings_for(runtime, **kwargs))
    async with server:
        target = f"127.0.0.1:{server.port}"
        async with grpc.aio.insecure_channel(
            target,
            options=[
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ],
        ) as channel:
            yield Sagewire(server, channel, target)


@dataclass
class RpcFailure:
    """A failed call's status, message and decoded google.rpc details."""

    code: grpc.StatusCode
    message: str
    details: list[pb_message.Message]

    def detail(self, kind: type[pb_message.Message]) -> Any:
        found = [d for d in self.details if isinstance(d, kind)]
        return found[0] if found else None

    @property
    def reason(self) -> str:
        info = self.detail(error_details_pb2.ErrorInfo)
        return str(info.reason) if info is not None else ""


_DETAIL_TYPES: list[type[pb_message.Message]] = [
    error_details_pb2.ErrorInfo,
    error_details_pb2.BadRequest,
    error_details_pb2.RetryInfo,
    error_details_pb2.QuotaFailure,
    common_pb2.ModelErrorDetail,
]


def failure(error: grpc.aio.AioRpcError) -> RpcFailure:
    details: list[pb_message.Message] = []
    # grpc.aio yields (key, value) tuples; grpc-stubs types them otherwise.
    trailers = cast("list[tuple[str, bytes]]", list(error.trailing_metadata() or ()))
    for key, value in trailers:
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for packed in status.details:
                for kind in _DETAIL_TYPES:
                    if packed.Is(kind.DESCRIPTOR):
                        item = kind()
                        packed.Unpack(item)
                        details.append(item)
    return RpcFailure(error.code(), error.details() or "", details)


def wire_metadata_bytes(error: SagewireError) -> int:
    """Trailer bytes as gRPC core counts them: binary values base64, message percent-encoded."""
    status = to_grpc_status(error)
    message = status.details.encode()
    # grpc-message percent-encodes every byte outside printable ASCII, and "%" itself.
    escaped = sum(1 if 0x20 <= b <= 0x7E and b != 0x25 else 3 for b in message)
    size = len("grpc-message") + escaped
    for key, value in status.trailing_metadata:
        raw = value if isinstance(value, bytes) else value.encode()
        size += len(key) + len(base64.b64encode(raw))
    return size
