"""DescribeEndpoint, the one control-plane call, driven by a plain aioboto3 `sagemaker` client."""

from __future__ import annotations

import aioboto3
import botocore.exceptions
import pytest

from sagewire.emulator import RunningEmulator

from .conftest import NO_RETRIES


async def _describe(emulator: RunningEmulator, name: str) -> dict[str, object]:
    session = aioboto3.Session(
        aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
    )
    async with session.client("sagemaker", endpoint_url=emulator.url, config=NO_RETRIES) as sm:
        response: dict[str, object] = await sm.describe_endpoint(EndpointName=name)
        return response


async def test_a_configured_endpoint_is_in_service(emulator: RunningEmulator) -> None:
    described = await _describe(emulator, "echo")
    assert described["EndpointName"] == "echo"
    assert described["EndpointStatus"] == "InService"
    assert str(described["EndpointArn"]).endswith(":endpoint/echo")


async def test_an_unknown_endpoint_is_a_validation_exception(emulator: RunningEmulator) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        await _describe(emulator, "ghost")
    error = caught.value.response["Error"]
    assert error["Code"] == "ValidationException"
    assert error["Message"] == 'Could not find endpoint "ghost".'
