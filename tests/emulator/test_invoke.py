"""InvokeEndpoint conformance: a plain aioboto3 client against the emulator over loopback."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import aiohttp
import botocore.config
import pytest
from botocore.exceptions import ClientError

from sagewire.emulator import Fault, RunningEmulator
from sagewire.emulator.errors import MODEL_TIMEOUT_MESSAGE

if TYPE_CHECKING:
    from emulator.conftest import ClientFactory

SIX_MIB = 6_291_456


async def test_echo_round_trip_with_headers(client: Any, emulator: RunningEmulator) -> None:
    response = await client.invoke_endpoint(
        EndpointName="echo",
        Body=b'{"hello": "world"}',
        ContentType="application/json",
        Accept="application/json",
        CustomAttributes="trace=abc",
        InferenceId="inf-1",
    )
    assert await response["Body"].read() == b'{"hello": "world"}'
    assert response["ContentType"] == "application/json"
    assert response["InvokedProductionVariant"] == "AllTraffic"
    assert response["CustomAttributes"] == "trace=abc"
    request_id = response["ResponseMetadata"]["RequestId"]
    assert len(request_id) == 36  # a uuid
    assert emulator.stats("echo").invocations == 1


async def test_target_variant_is_honoured_when_declared(client: Any) -> None:
    response = await client.invoke_endpoint(EndpointName="echo", Body=b"x", TargetVariant="B")
    assert response["InvokedProductionVariant"] == "B"


async def test_unknown_target_variant_is_a_validation_error(client: Any) -> None:
    with pytest.raises(ClientError) as caught:
        await client.invoke_endpoint(EndpointName="echo", Body=b"x", TargetVariant="C")
    assert caught.value.response["Error"]["Code"] == "ValidationError"
    assert "Target variant C" in caught.value.response["Error"]["Message"]


async def test_unknown_endpoint(client: Any) -> None:
    with pytest.raises(ClientError) as caught:
        await client.invoke_endpoint(EndpointName="nope", Body=b"x")
    error = caught.value.response["Error"]
    assert error == {
        "Code": "ValidationError",
        "Message": "Endpoint nope of account 123456789012 not found.",
    }
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert caught.value.response["ResponseMetadata"]["RequestId"]


async def test_body_limit_is_six_mib(client: Any) -> None:
    response = await client.invoke_endpoint(EndpointName="echo", Body=bytes(SIX_MIB))
    assert len(await response["Body"].read()) == SIX_MIB
    with pytest.raises(ClientError) as caught:
        await client.invoke_endpoint(EndpointName="echo", Body=bytes(SIX_MIB + 1))
    request_id = caught.value.response["ResponseMetadata"]["RequestId"]
    assert caught.value.response["Error"] == {
        "Code": "ValidationError",
        "Message": f"Request {request_id} has oversize body.",
    }


async def test_tokens_realtime_returns_all_lines(client: Any) -> None:
    response = await client.invoke_endpoint(
        EndpointName="tokens", Body=json.dumps({"text": "one two"})
    )
    assert response["ContentType"] == "application/jsonlines"
    lines = [json.loads(line) for line in (await response["Body"].read()).splitlines()]
    assert lines == [
        {"token": "one", "index": 0},
        {"token": "two", "index": 1},
        {"done": True, "count": 2},
    ]


async def test_model_rejecting_input_is_a_model_error_with_its_status(client: Any) -> None:
    with pytest.raises(ClientError) as caught:
        await client.invoke_endpoint(EndpointName="tokens", Body=b"not json")
    response = caught.value.response
    assert response["Error"]["Code"] == "ModelError"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert response["OriginalStatusCode"] == 400
    assert "not JSON" in response["OriginalMessage"]
    assert response["Error"]["Message"].startswith("Received client error (400) from primary")


async def test_demo_model_error_endpoint_carries_all_model_error_fields(client: Any) -> None:
    with pytest.raises(ClientError) as caught:
        await client.invoke_endpoint(EndpointName="model-error", Body=b"x")
    response = caught.value.response
    assert response["Error"]["Code"] == "ModelError"
    assert response["OriginalStatusCode"] == 500
    assert response["OriginalMessage"] == "model crashed (demo)"
    assert response["LogStreamArn"] == (
        "arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/model-error"
    )
    assert (
        'Received server error (500) from primary with message "model crashed (demo)"'
        in (response["Error"]["Message"])
    )


@pytest.mark.parametrize(
    ("endpoint", "code", "status"),
    [
        ("not-ready", "ModelNotReadyException", 429),
        ("throttled", "ThrottlingException", 400),
        ("unavailable", "ServiceUnavailable", 503),
    ],
)
async def test_demo_fault_endpoints(
    client: Any, emulator: RunningEmulator, endpoint: str, code: str, status: int
) -> None:
    with pytest.raises(ClientError) as caught:
        await client.invoke_endpoint(EndpointName=endpoint, Body=b"x")
    assert caught.value.response["Error"]["Code"] == code
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert emulator.stats(endpoint).invocations == 1  # no retry with total_max_attempts=1
    assert emulator.stats(endpoint).errors == 1


@pytest.mark.parametrize(
    ("error", "code", "status"),
    [
        ("model_not_ready", "ModelNotReadyException", 429),
        ("service_unavailable", "ServiceUnavailable", 503),
        ("throttling", "ThrottlingException", 400),
        ("internal_failure", "InternalFailure", 500),
        ("internal_dependency", "InternalDependencyException", 530),
        ("validation", "ValidationError", 400),
    ],
)
async def test_each_injected_error_maps_to_its_botocore_code(
    client: Any, emulator: RunningEmulator, error: Any, code: str, status: int
) -> None:
    emulator.set_fault("echo", Fault(error=error, message=f"injected {error}"))
    with pytest.raises(ClientError) as caught:
        await client.invoke_endpoint(EndpointName="echo", Body=b"x")
    assert caught.value.response["Error"] == {"Code": code, "Message": f"injected {error}"}
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    # The same fault refuses the response stream before any event.
    with pytest.raises(ClientError) as caught:
        await client.invoke_endpoint_with_response_stream(EndpointName="echo", Body=b"x")
    assert caught.value.response["Error"]["Code"] == code
    emulator.set_fault("echo", None)
    assert await (await client.invoke_endpoint(EndpointName="echo", Body=b"x"))["Body"].read()


async def test_injected_model_error_fields(client: Any, emulator: RunningEmulator) -> None:
    emulator.set_fault(
        "echo", Fault(error="model_error", original_status=418, original_message="teapot")
    )
    with pytest.raises(ClientError) as caught:
        await client.invoke_endpoint(EndpointName="echo", Body=b"x")
    response = caught.value.response
    assert (response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]) == (
        "ModelError",
        424,
    )
    assert (response["OriginalStatusCode"], response["OriginalMessage"]) == (418, "teapot")


async def test_model_timeout_waits_then_says_60_seconds(
    client: Any, emulator: RunningEmulator
) -> None:
    emulator.set_fault("echo", Fault(error="model_timeout", timeout_after_ms=150))
    started = time.monotonic()
    with pytest.raises(ClientError) as caught:
        await client.invoke_endpoint(EndpointName="echo", Body=b"x")
    assert time.monotonic() - started >= 0.15
    response = caught.value.response
    assert response["Error"]["Code"] == "ModelError"
    assert MODEL_TIMEOUT_MESSAGE in response["Error"]["Message"]
    assert "60 seconds" in response["Error"]["Message"]
    assert "OriginalStatusCode" not in response


async def test_latency_is_added(client: Any, emulator: RunningEmulator) -> None:
    emulator.set_fault("echo", Fault(latency_ms=200))
    started = time.monotonic()
    response = await client.invoke_endpoint(EndpointName="echo", Body=b"slow")
    assert await response["Body"].read() == b"slow"
    assert time.monotonic() - started >= 0.2


async def test_max_attempts_counts_retries_not_attempts(
    emulator: RunningEmulator, make_client: ClientFactory
) -> None:
    """botocore's ``retries={"max_attempts": 1}`` means one *retry*: throttling is sent twice.
    Use ``total_max_attempts=1`` to see an error exactly once (pinned here for the gateway)."""
    config = botocore.config.Config(retries={"max_attempts": 1})
    async with make_client(emulator.url, config) as retrying:
        with pytest.raises(ClientError) as caught:
            await retrying.invoke_endpoint(EndpointName="throttled", Body=b"x")
    assert caught.value.response["Error"]["Code"] == "ThrottlingException"
    assert caught.value.response["ResponseMetadata"]["RetryAttempts"] == 1
    assert emulator.stats("throttled").invocations == 2


async def test_ping_stats_and_unknown_routes(client: Any, emulator: RunningEmulator) -> None:
    await client.invoke_endpoint(EndpointName="echo", Body=b"x")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{emulator.url}/ping") as ping:
            assert ping.status == 200
            assert ping.headers["x-amzn-RequestId"]
        async with http.get(f"{emulator.url}/_emulator/stats") as stats:
            body = await stats.json()
        assert body["echo"]["invocations"] == 1
        assert set(body) == set(emulator.all_stats())
        async with http.post(f"{emulator.url}/endpoints/echo/nope") as unknown:
            assert unknown.status == 404
            assert unknown.headers["x-amzn-ErrorType"] == "UnknownOperationException"
            assert "message" in await unknown.json()
