"""What sagewire's AWS clients send again (sagewire.aws.retries): only failures that prove AWS
did not act. Asked through botocore's own `needs-retry` event of a real aioboto3 client, in each
retry mode, and through the standard retry handler the lean client calls after each attempt
(sagewire.aws.lean); the wire-level cases are in tests/integration/test_upstream_phases.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp.client_reqrep import ConnectionKey
from botocore import exceptions as bx
from botocore.awsrequest import AWSResponse
from botocore.retries.quota import RetryQuota

from sagewire.aws.client import SharedClient
from sagewire.aws.error_table import Service
from sagewire.aws.retries import resend_handler
from sagewire.config.settings import AwsSettings

URL = "http://127.0.0.1:9"
REFUSED = aiohttp.ClientConnectorError(
    ConnectionKey("127.0.0.1", 9, False, True, None, None, None), ConnectionRefusedError(111, "no")
)


@pytest_asyncio.fixture(
    scope="module", loop_scope="session", params=["standard", "adaptive", "legacy", "lean"]
)
async def client(request: pytest.FixtureRequest) -> AsyncIterator[SharedClient]:
    mode: Any = "standard" if request.param == "lean" else request.param
    settings = AwsSettings(
        runtime_endpoint_url=URL, retry_mode=mode, max_attempts=3, client="aioboto3"
    )
    async with SharedClient("sagemaker-runtime", URL, settings) as shared:
        if request.param == "lean":
            shared.lean_handler = resend_handler(Service.RUNTIME, 3, RetryQuota())[0]  # type: ignore[attr-defined]
        yield shared


async def _ask(shared: SharedClient, attempts: int = 1, **failure: Any) -> bool:
    """Whether the client's retry handler resends InvokeEndpoint after `failure`."""
    client = shared._client
    operation = client.meta.service_model.operation_model("InvokeEndpoint")
    lean = getattr(shared, "lean_handler", None)
    if lean is not None:
        delay = lean.needs_retry(
            response=failure.get("response"),
            operation=operation,
            attempts=attempts,
            caught_exception=failure.get("exc"),
            request_dict={"context": {}},
        )
        return delay is not None
    responses = await client.meta.events.emit(
        "needs-retry.sagemaker-runtime.InvokeEndpoint",
        response=failure.get("response"),
        endpoint=None,
        operation=operation,
        attempts=attempts,
        caught_exception=failure.get("exc"),
        request_dict={"context": {}},
    )
    return any(delay is not None for _, delay in responses)


def _answer(code: str, status: int) -> tuple[AWSResponse, dict[str, Any]]:
    parsed = {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {}}
    return AWSResponse(URL, status, {}, None), parsed


async def _resends(shared: SharedClient, **failure: Any) -> bool:
    result = await _ask(shared, **failure)
    assert not await _ask(shared, attempts=3, **failure)  # never past aws.max_attempts
    return result


@pytest.mark.parametrize(
    "exc",
    [
        bx.EndpointConnectionError(endpoint_url=URL, error=REFUSED),
        bx.ConnectTimeoutError(endpoint_url=URL),
    ],
)
async def test_a_connection_never_made_is_resent(client: SharedClient, exc: Exception) -> None:
    assert await _resends(client, exc=exc)


@pytest.mark.parametrize(
    "exc",
    [
        bx.ReadTimeoutError(endpoint_url=URL),
        bx.ConnectionClosedError(endpoint_url=URL),
        bx.EndpointConnectionError(endpoint_url=URL, error=aiohttp.ClientOSError(104, "reset")),
    ],
)
async def test_a_call_that_may_have_run_is_not_resent(client: SharedClient, exc: Exception) -> None:
    assert not await _ask(client, exc=exc)


@pytest.mark.parametrize(
    ("code", "status"),
    [("ThrottlingException", 400), ("ServiceUnavailable", 503)],
)
async def test_answers_that_say_nothing_ran_are_resent(
    client: SharedClient, code: str, status: int
) -> None:
    assert await _resends(client, response=_answer(code, status))


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("InternalFailure", 500),
        ("InternalDependencyException", 500),
        ("ModelError", 424),
        ("ValidationError", 400),
        ("", 502),
        # Nothing ran, but sagewire.core.cold_start owns these resends (one layer, not two).
        ("ModelNotReadyException", 429),
    ],
)
async def test_answers_that_may_follow_a_run_are_not_resent(
    client: SharedClient, code: str, status: int
) -> None:
    assert not await _ask(client, response=_answer(code, status))
