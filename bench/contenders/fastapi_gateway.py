"""The REST reference: a SageMaker gateway built the usual way, FastAPI + uvicorn + aioboto3.

JSON in, JSON out; one aioboto3 client for the app's lifetime (created in the lifespan, as the
FastAPI docs recommend for shared resources), with the same pool size sagewire gets. The AWS
endpoint comes from the standard AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME variable.

    uvicorn bench.contenders.fastapi_gateway:app --fd 3 --no-access-log
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aioboto3
from botocore.config import Config
from botocore.exceptions import ClientError
from fastapi import FastAPI, HTTPException, Request

POOL = 1024


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    config = Config(
        max_pool_connections=POOL, retries={"mode": "standard", "total_max_attempts": 3}
    )
    async with aioboto3.Session().client("sagemaker-runtime", config=config) as client:
        app.state.sagemaker = client
        yield


app = FastAPI(title="SageMaker REST gateway (benchmark reference)", lifespan=lifespan)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/v1/models/{model}:invoke")
async def invoke(model: str, payload: dict[str, Any], request: Request) -> Any:
    client = request.app.state.sagemaker
    try:
        response = await client.invoke_endpoint(
            EndpointName=model,
            Body=json.dumps(payload),
            ContentType="application/json",
            Accept="application/json",
        )
        async with response["Body"] as body:
            data = await body.read()
    except ClientError as exc:
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 502)
        raise HTTPException(status_code=status, detail=error.get("Message", "")) from None
    return json.loads(data)
