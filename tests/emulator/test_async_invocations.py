"""InvokeEndpointAsync conformance: plain aioboto3 against the emulator and moto's S3 server,
over loopback. What SageMaker promises: 202 at once, the InferenceId and both S3 locations, the
output or failure object written later, a failure object for a missing input."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aioboto3
import botocore.config
import pytest
import pytest_asyncio
from botocore.exceptions import ClientError

from sagewire.emulator import EmulatorConfig, EndpointConfig, Fault, default_config
from sagewire.emulator.async_config import AsyncInferenceConfig
from sagewire.emulator.s3_server import create_buckets, running_s3
from sagewire.emulator.server import RunningEmulator, running_emulator

from .conftest import NO_RETRIES

INPUTS = "emulator-inputs"
OUTPUT = re.compile(r"^s3://sagewire-emulator/async-output/[0-9a-f-]{36}\.out$")
FAILURE = re.compile(r"^s3://sagewire-emulator/async-failures/[0-9a-f-]{36}-error\.out$")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def s3_url() -> AsyncIterator[str]:
    with running_s3() as url:
        await create_buckets(url, [INPUTS])
        yield url


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def async_emulator(s3_url: str) -> AsyncIterator[RunningEmulator]:
    endpoints = dict(default_config().endpoints)
    endpoints["one-at-a-time"] = EndpointConfig(
        model="slow-echo", async_inference=AsyncInferenceConfig(workers=1, max_queue=1)
    )
    endpoints["own-paths"] = EndpointConfig(
        model="echo",
        async_inference=AsyncInferenceConfig(
            output_path="s3://own-results/team-a", failure_path="s3://own-results/team-a-errors"
        ),
    )
    config = EmulatorConfig(endpoints=endpoints)
    async with running_emulator(config, s3_endpoint_url=s3_url) as emulator:
        yield emulator


@pytest.fixture
def emulator(async_emulator: RunningEmulator) -> RunningEmulator:
    async_emulator.reset()
    return async_emulator


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def clients(async_emulator: RunningEmulator, s3_url: str) -> AsyncIterator[tuple[Any, Any]]:
    session = aioboto3.Session(
        aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
    )
    async with (
        session.client(
            "sagemaker-runtime", endpoint_url=async_emulator.url, config=NO_RETRIES
        ) as sagemaker,
        session.client("s3", endpoint_url=s3_url) as s3,
    ):
        yield sagemaker, s3


async def _put_input(s3: Any, key: str, body: bytes) -> str:
    await s3.put_object(Bucket=INPUTS, Key=key, Body=body)
    return f"s3://{INPUTS}/{key}"


async def _object(s3: Any, uri: str, within_s: float = 5.0) -> tuple[bytes, str]:
    """Wait for the object at `uri`; its body and content type."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    deadline = time.monotonic() + within_s
    while True:
        try:
            response = await s3.get_object(Bucket=bucket, Key=key)
        except ClientError:
            if time.monotonic() > deadline:
                pytest.fail(f"{uri} did not appear within {within_s}s")
            await asyncio.sleep(0.02)
            continue
        async with response["Body"] as body:
            return await body.read(), str(response["ContentType"])


async def _exists(s3: Any, uri: str) -> bool:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    try:
        await s3.head_object(Bucket=bucket, Key=key)
    except ClientError:
        return False
    return True


async def test_accepted_at_once_then_the_output_is_written(
    emulator: RunningEmulator, clients: tuple[Any, Any]
) -> None:
    sagemaker, s3 = clients
    location = await _put_input(s3, "doc.json", b'{"pages": 3}')
    response = await sagemaker.invoke_endpoint_async(
        EndpointName="slow-echo",
        InputLocation=location,
        ContentType="application/json",
        Accept="application/json",
        CustomAttributes="delay_ms=300",
        InferenceId="my-inference-1",
        RequestTTLSeconds=600,
        InvocationTimeoutSeconds=60,
    )
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert response["InferenceId"] == "my-inference-1"
    assert OUTPUT.match(response["OutputLocation"])
    assert FAILURE.match(response["FailureLocation"])
    # One id names both objects.
    assert response["OutputLocation"][-40:-4] == response["FailureLocation"][-46:-10]
    # Accepted before the model ran: the output is not there yet.
    assert not await _exists(s3, response["OutputLocation"])
    body, content_type = await _object(s3, response["OutputLocation"])
    assert (body, content_type) == (b'{"pages": 3}', "application/json")
    assert not await _exists(s3, response["FailureLocation"])
    assert emulator.stats("slow-echo").invocations == 1


async def test_an_inference_id_is_generated_when_none_is_given(
    emulator: RunningEmulator, clients: tuple[Any, Any]
) -> None:
    sagemaker, s3 = clients
    location = await _put_input(s3, "x.bin", b"x")
    first = await sagemaker.invoke_endpoint_async(EndpointName="echo", InputLocation=location)
    second = await sagemaker.invoke_endpoint_async(EndpointName="echo", InputLocation=location)
    assert first["InferenceId"]
    assert first["InferenceId"] != second["InferenceId"]
    assert first["OutputLocation"] != second["OutputLocation"]
    assert (await _object(s3, second["OutputLocation"]))[0] == b"x"


async def test_a_missing_input_becomes_a_failure_object(
    emulator: RunningEmulator, clients: tuple[Any, Any]
) -> None:
    sagemaker, s3 = clients
    response = await sagemaker.invoke_endpoint_async(
        EndpointName="echo", InputLocation=f"s3://{INPUTS}/not/there.json"
    )
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 202
    reason, content_type = await _object(s3, response["FailureLocation"])
    assert b"NoSuchKey" in reason
    assert content_type.startswith("text/plain")
    assert not await _exists(s3, response["OutputLocation"])


async def test_model_failure_and_timeout_become_failure_objects(
    emulator: RunningEmulator, clients: tuple[Any, Any]
) -> None:
    sagemaker, s3 = clients
    location = await _put_input(s3, "y.json", b"{}")
    failed = await sagemaker.invoke_endpoint_async(
        EndpointName="slow-echo",
        InputLocation=location,
        CustomAttributes="delay_ms=0;fail=cannot read page 2",
    )
    slow = await sagemaker.invoke_endpoint_async(
        EndpointName="slow-echo",
        InputLocation=location,
        CustomAttributes="delay_ms=5000",
        InvocationTimeoutSeconds=1,
    )
    assert (await _object(s3, failed["FailureLocation"]))[0] == b"cannot read page 2"
    started = time.monotonic()
    reason = (await _object(s3, slow["FailureLocation"]))[0]
    assert b"InvocationTimeoutSeconds (1)" in reason
    assert time.monotonic() - started < 3  # cut at 1 s, not after the 5 s delay
    assert not await _exists(s3, slow["OutputLocation"])


async def test_injected_faults(emulator: RunningEmulator, clients: tuple[Any, Any]) -> None:
    sagemaker, s3 = clients
    location = await _put_input(s3, "z.json", b"{}")
    emulator.set_fault("echo", Fault(error="throttling"))
    with pytest.raises(ClientError) as caught:
        await sagemaker.invoke_endpoint_async(EndpointName="echo", InputLocation=location)
    assert caught.value.response["Error"]["Code"] == "ThrottlingException"
    # The model's own faults happen later, in the background, as on SageMaker.
    emulator.set_fault("echo", Fault(error="model_error", original_message="model crashed"))
    response = await sagemaker.invoke_endpoint_async(EndpointName="echo", InputLocation=location)
    assert (await _object(s3, response["FailureLocation"]))[0] == b"model crashed"
    assert emulator.stats("echo").errors == 1


async def test_cold_and_error_rate_answer_the_async_call_itself(
    emulator: RunningEmulator, clients: tuple[Any, Any]
) -> None:
    sagemaker, s3 = clients
    location = await _put_input(s3, "cold.json", b"{}")
    emulator.set_fault("echo", Fault(cold_for_calls=1))
    with pytest.raises(ClientError) as caught:
        await sagemaker.invoke_endpoint_async(EndpointName="echo", InputLocation=location)
    assert caught.value.response["Error"]["Code"] == "ModelNotReadyException"
    accepted = await sagemaker.invoke_endpoint_async(EndpointName="echo", InputLocation=location)
    assert (await _object(s3, accepted["OutputLocation"]))[0] == b"{}"
    # A model fault drawn at acceptance becomes the failure object, even at a rate.
    emulator.set_fault("echo", Fault(error="model_error", error_rate=1.0, original_message="x"))
    failed = await sagemaker.invoke_endpoint_async(EndpointName="echo", InputLocation=location)
    assert (await _object(s3, failed["FailureLocation"]))[0] == b"x"
    assert emulator.stats("echo").faults_injected == 2


async def test_each_endpoint_has_a_bounded_queue_and_fixed_workers(
    emulator: RunningEmulator, clients: tuple[Any, Any]
) -> None:
    sagemaker, s3 = clients
    location = await _put_input(s3, "q.json", b"{}")

    async def submit() -> dict[str, Any]:
        response: dict[str, Any] = await sagemaker.invoke_endpoint_async(
            EndpointName="one-at-a-time", InputLocation=location, CustomAttributes="delay_ms=300"
        )
        return response

    started = time.monotonic()
    running = await submit()  # taken by the single worker
    await asyncio.sleep(0.05)
    queued = await submit()  # the one queue slot
    with pytest.raises(ClientError) as caught:
        await submit()
    assert caught.value.response["Error"]["Code"] == "ServiceUnavailable"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    await _object(s3, running["OutputLocation"])
    await _object(s3, queued["OutputLocation"])
    # One worker: the second job started only when the first had finished.
    assert time.monotonic() - started >= 0.6


async def test_output_and_failure_paths_come_from_the_endpoint_config(
    emulator: RunningEmulator, clients: tuple[Any, Any]
) -> None:
    sagemaker, s3 = clients
    location = await _put_input(s3, "p.json", b"{}")
    response = await sagemaker.invoke_endpoint_async(
        EndpointName="own-paths", InputLocation=location
    )
    assert response["OutputLocation"].startswith("s3://own-results/team-a/")
    assert response["FailureLocation"].startswith("s3://own-results/team-a-errors/")
    assert (await _object(s3, response["OutputLocation"]))[0] == b"{}"  # bucket made on demand


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"RequestTTLSeconds": 59}, "greater than or equal to 60"),
        ({"RequestTTLSeconds": 21_601}, "less than or equal to 21600"),
        ({"InvocationTimeoutSeconds": 0}, "greater than or equal to 1"),
        ({"InvocationTimeoutSeconds": 3_601}, "less than or equal to 3600"),
        ({"InputLocation": "ftp://bucket/x"}, "regular expression pattern"),
        ({"InputLocation": "https://bucket.s3.amazonaws.com/x"}, "only s3://"),
        ({"EndpointName": "ghost"}, "Endpoint ghost of account 123456789012 not found."),
    ],
)
async def test_validation_errors(
    emulator: RunningEmulator, make_client: Any, params: dict[str, Any], message: str
) -> None:
    # Client-side validation off, so values botocore itself would refuse reach the emulator.
    config = NO_RETRIES.merge(botocore.config.Config(parameter_validation=False))
    call = {"EndpointName": "echo", "InputLocation": f"s3://{INPUTS}/x", **params}
    async with make_client(emulator.url, config) as sagemaker:
        with pytest.raises(ClientError) as caught:
            await sagemaker.invoke_endpoint_async(**call)
    assert caught.value.response["Error"]["Code"] == "ValidationError"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert message in caught.value.response["Error"]["Message"]
