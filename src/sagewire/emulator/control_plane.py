"""The one SageMaker control-plane call sagewire makes: DescribeEndpoint (JSON 1.1 protocol,
`POST /` with `X-Amz-Target: SageMaker.DescribeEndpoint`), so ModelService can show an
endpoint's status locally. Every configured endpoint is `InService`."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from aiohttp import web

from sagewire.emulator import errors
from sagewire.emulator.endpoints import EmulatorState

TARGET = "SageMaker.DescribeEndpoint"
_CREATED = 1_767_225_600.0  # a fixed creation time keeps answers deterministic


def _error(code: str, message: str) -> web.Response:
    return web.Response(
        status=400,
        content_type="application/x-amz-json-1.1",
        headers={errors.ERROR_TYPE_HEADER: code},
        text=json.dumps({"__type": code, "message": message}),
    )


def describe_endpoint_handler(
    state: EmulatorState,
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        target = request.headers.get("X-Amz-Target", "")
        if target != TARGET:
            return _error("UnknownOperationException", f"the emulator does not serve {target!r}")
        try:
            name = str((await request.json())["EndpointName"])
        except (ValueError, KeyError, TypeError):
            return _error("ValidationException", "EndpointName is required")
        if name not in state.endpoints:
            return _error("ValidationException", f'Could not find endpoint "{name}".')
        arn = f"arn:aws:sagemaker:{errors.REGION}:{errors.ACCOUNT_ID}:endpoint/{name.lower()}"
        return web.Response(
            content_type="application/x-amz-json-1.1",
            text=json.dumps(
                {
                    "EndpointName": name,
                    "EndpointArn": arn,
                    "EndpointConfigName": name,
                    "EndpointStatus": "InService",
                    "CreationTime": _CREATED,
                    "LastModifiedTime": _CREATED,
                }
            ),
        )

    return handle
