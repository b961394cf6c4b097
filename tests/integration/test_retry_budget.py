"""One retry budget (issue 14): botocore's standard mode is the one upstream retry layer, and a
caller that retries itself (gRPC's `grpc-previous-rpc-attempts` > 0) gets one upstream attempt
per call, so attempts are never multiplied. Errors a retry cannot fix carry
`grpc-retry-pushback-ms: -1`, which stops a gRPC retry policy even for a code it retries.

Real grpc.aio clients (with sagewire's RETRY_SERVICE_CONFIG, or a variant of it) → sagewire with
`aws.max_attempts = 3` → the lean client and aioboto3 (the module runs over both) → the
emulator, whose invocation counter is the upstream truth.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from typing import Any, cast

import grpc
import pytest
import pytest_asyncio

from sagewire.client import RETRY_SERVICE_CONFIG
from sagewire.emulator.faults import Fault
from sagewire.emulator.server import RunningEmulator
from sagewire.v1 import inference_service_pb2_grpc, invoke_pb2
from support import BOTH_AWS_CLIENTS, Sagewire, failure, start_sagewire

pytestmark = BOTH_AWS_CLIENTS

UPSTREAM_ATTEMPTS = 3


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def retrying(emulator: RunningEmulator, aws_client: str) -> AsyncIterator[Sagewire]:
    """sagewire whose AWS client resends up to 3 attempts (the tests' default is 1)."""
    async with start_sagewire(
        emulator, aws={"max_attempts": UPSTREAM_ATTEMPTS, "client": aws_client}
    ) as sw:
        yield sw


def _invoke(model: str = "faulty") -> invoke_pb2.InvokeRequest:
    return invoke_pb2.InvokeRequest(model=model, body=b"{}")


async def test_a_first_attempt_uses_the_upstream_retries(
    retrying: Sagewire, emulator: RunningEmulator
) -> None:
    emulator.set_fault("faulty", Fault(error="service_unavailable"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await retrying.inference.Invoke(_invoke(), timeout=20)
    assert failure(caught.value).reason == "SAGEMAKER_UNAVAILABLE"
    assert emulator.stats("faulty").invocations == UPSTREAM_ATTEMPTS


async def test_a_retrying_stream_does_not_multiply_upstream_attempts(
    retrying: Sagewire, emulator: RunningEmulator
) -> None:
    # gRPC clients send grpc-previous-rpc-attempts themselves (an application cannot: gRPC
    # drops "grpc-" keys from call metadata), so the retried attempt comes from a real policy.
    emulator.set_fault("faulty-stream", Fault(error="service_unavailable"))
    config = _policy(max_attempts=2)
    async with _channel(retrying.target, config) as channel:
        stub = inference_service_pb2_grpc.InferenceServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in stub.InvokeStream(
                invoke_pb2.InvokeStreamRequest(model="faulty-stream", body=b"{}"), timeout=30
            ):
                pass
    f = failure(caught.value)
    assert (f.code, f.reason) == (grpc.StatusCode.UNAVAILABLE, "SAGEMAKER_UNAVAILABLE")
    # The last answer still invites a further retry: sagewire only did not add its own.
    assert _pushback(caught.value) == "1000"
    assert emulator.stats("faulty-stream").invocations == UPSTREAM_ATTEMPTS + 1


async def test_a_retrying_client_does_not_multiply_upstream_attempts(
    retrying: Sagewire, emulator: RunningEmulator
) -> None:
    # gRPC's policy makes 4 attempts (RETRY_SERVICE_CONFIG); only the first may resend upstream:
    # 3 + 1 + 1 + 1 model calls, not 4 × 3.
    emulator.set_fault("faulty", Fault(error="service_unavailable"))
    config = _policy()
    async with _channel(retrying.target, config) as channel:
        stub = inference_service_pb2_grpc.InferenceServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Invoke(_invoke(), timeout=30)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    attempts = config["methodConfig"][0]["retryPolicy"]["maxAttempts"]
    assert emulator.stats("faulty").invocations == UPSTREAM_ATTEMPTS + attempts - 1


async def test_pushback_minus_one_stops_a_policy_that_retries_the_code(
    retrying: Sagewire, emulator: RunningEmulator
) -> None:
    # A client that (unwisely) retries INTERNAL too: the model's own 500 is INTERNAL /
    # MODEL_ERROR with no RetryInfo, so sagewire sends pushback -1 and the policy stops.
    emulator.set_fault("faulty", Fault(error="model_error", original_status=500))
    config = _policy(codes=["UNAVAILABLE", "INTERNAL"])
    async with _channel(retrying.target, config) as channel:
        stub = inference_service_pb2_grpc.InferenceServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Invoke(_invoke(), timeout=30)
    assert failure(caught.value).reason == "MODEL_ERROR"
    assert _pushback(caught.value) == "-1"
    assert emulator.stats("faulty").invocations == 1


def _policy(max_attempts: int = 0, codes: list[str] | None = None) -> dict[str, Any]:
    """RETRY_SERVICE_CONFIG with its pushback-less backoff shortened (sagewire's pushback
    still decides the wait where it sends one)."""
    config = copy.deepcopy(RETRY_SERVICE_CONFIG)
    policy = config["methodConfig"][0]["retryPolicy"]
    policy["initialBackoff"] = "0.01s"
    if max_attempts:
        policy["maxAttempts"] = max_attempts
    if codes:
        policy["retryableStatusCodes"] = codes
    return config


def _pushback(error: grpc.aio.AioRpcError) -> str:
    trailers = cast("list[tuple[str, str | bytes]]", list(error.trailing_metadata() or ()))
    return next(str(value) for key, value in trailers if key == "grpc-retry-pushback-ms")


def _channel(target: str, config: dict[str, Any]) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(
        target,
        options=[("grpc.enable_retries", 1), ("grpc.service_config", json.dumps(config))],
    )
