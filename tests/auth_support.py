"""Servers and clients for the authentication tests: a TLS sagewire with JWT and API-key auth
(module fixtures), per-call metadata, and reading the failure of one call."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from sagewire.security.api_keys import hash_key
from sagewire.v1 import inference_service_pb2_grpc, invoke_pb2
from support import RpcFailure, failure

# Keys callers hold; sagewire's file holds only their hashes.
BATCH_KEY = "swk_batch-test-key-0123456789abcdef"
READER_KEY = "swk_reader-test-key-0123456789abcdef"
API_KEY_LINES = f"# test keys\nbatch {hash_key(BATCH_KEY)}\nreader {hash_key(READER_KEY)}\n"

AUTH_ROUTES: dict[str, dict[str, Any]] = {
    "echo": {
        "endpoint": "echo",
        "callers": [
            "spiffe://example.org/ns/checkout/sa/api",
            "jwt:sub:svc-fraud",
            "group:ml-readers",
            "key:batch",
        ],
    },
    "echo-strict": {"endpoint": "echo", "callers": ["jwt:sub:svc-other"]},
    "echo-open": {"endpoint": "echo", "callers": ["*"]},
    "hidden": {"endpoint": "echo"},  # no callers: nobody, once auth is on
}


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def api_key(key: str) -> list[tuple[str, str]]:
    return [("x-api-key", key)]


async def invoke(
    channel: grpc.aio.Channel, metadata: Sequence[tuple[str, str]] = (), model: str = "echo"
) -> bytes:
    stub = inference_service_pb2_grpc.InferenceServiceStub(channel)
    reply = await stub.Invoke(
        invoke_pb2.InvokeRequest(model=model, body=b'{"a":1}'), metadata=metadata, timeout=10
    )
    return bytes(reply.body)


async def invoke_failure(
    channel: grpc.aio.Channel, metadata: Sequence[tuple[str, str]] = (), model: str = "echo"
) -> RpcFailure:
    try:
        await invoke(channel, metadata, model)
    except grpc.aio.AioRpcError as error:
        return failure(error)
    raise AssertionError(f"call with {len(metadata)} metadata entries was accepted")
