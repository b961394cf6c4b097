"""InvokeEndpointAsync: accept at once (202), run the model in the background, and write the
output or failure object to S3 at the locations the 202 named.

Why: async inference is SageMaker plus S3, so the emulator does what SageMaker does with the
S3 it is pointed at (moto's server in tests and ``sagewire local``): it reads the input object,
runs the endpoint's model under the request's InvocationTimeoutSeconds, and writes
``<output_path>/<uuid>.out`` (with the model's Content-Type) or ``<failure_path>/<uuid>-error.out``
(the reason as text). A missing input object becomes a failure object, as on SageMaker.

Each endpoint gets a bounded queue and a fixed number of workers (``async_inference`` in its
config); a full queue answers 503 ServiceUnavailable. The S3 client is made on first use with the
standard endpoint resolution (``s3_endpoint_url`` or AWS_ENDPOINT_URL_S3), and the output and
failure buckets are created if missing, since a fresh moto server has none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from contextlib import AsyncExitStack, aclosing
from dataclasses import dataclass, field
from typing import Any

import aioboto3
import botocore.config
from aiohttp import web
from botocore.exceptions import BotoCoreError, ClientError

from sagewire.emulator import errors
from sagewire.emulator.endpoints import EmulatorState, Endpoint
from sagewire.emulator.errors import ApiError
from sagewire.emulator.fault_run import Decision, count
from sagewire.emulator.faults import DropConnection, Fault
from sagewire.emulator.model_api import ModelFailure, ModelRequest

log = logging.getLogger(__name__)

_SM = "X-Amzn-SageMaker-"
OUTPUT_LOCATION = _SM + "OutputLocation"
FAILURE_LOCATION = _SM + "FailureLocation"
MAX_INPUT_BYTES = 1024**3
TTL_RANGE = (60, 21_600)
TIMEOUT_RANGE = (1, 3_600)
DEFAULT_TTL_S = 21_600
DEFAULT_TIMEOUT_S = 900
_INPUT_LOCATION = re.compile(r"^(https|s3)://([^/]+)/?(.*)$")
_INFERENCE_ID = re.compile(r"^\S[\x20-\x7e]*$")
# Faults that are the model's doing: on the async path they become failure objects.
_MODEL_FAULTS = frozenset({"model_error", "model_timeout"})


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def _constraint(name: str, value: object, rule: str) -> ApiError:
    return errors.validation_error(
        f"1 validation error detected: Value '{value}' at '{name}' failed to satisfy "
        f"constraint: {rule}"
    )


def _int_header(request: web.Request, header: str, name: str, bounds: tuple[int, int]) -> int:
    raw = request.headers.get(_SM + header)
    low, high = bounds
    if raw is None:
        return DEFAULT_TTL_S if header == "RequestTTLSeconds" else DEFAULT_TIMEOUT_S
    try:
        value = int(raw)
    except ValueError:
        raise _constraint(name, raw, "Member must be an integer") from None
    if value < low:
        raise _constraint(name, value, f"Member must have value greater than or equal to {low}")
    if value > high:
        raise _constraint(name, value, f"Member must have value less than or equal to {high}")
    return value


@dataclass
class _Job:
    endpoint: str
    inference_id: str
    input: str
    output: str
    failure: str
    content_type: str | None
    accept: str | None
    custom_attributes: str | None
    ttl_s: int
    timeout_s: int
    accepted_at: float
    # The fault drawn for this call when it was accepted: its latency delays the model, and a
    # model_error / model_timeout becomes the failure object.
    fault: Fault = field(default_factory=Fault)
    decision: Decision = field(default_factory=Decision)


@dataclass
class _Lane:
    queue: asyncio.Queue[_Job]
    workers: list[asyncio.Task[None]] = field(default_factory=list)


class AsyncInvocations:
    """The async side of the emulator: one lane (queue + workers) per endpoint, made on use."""

    def __init__(self, state: EmulatorState, s3_endpoint_url: str | None = None) -> None:
        self._state = state
        self._s3_endpoint_url = s3_endpoint_url
        self._stack = AsyncExitStack()
        self._client: Any = None
        self._client_lock = asyncio.Lock()
        self._buckets: set[str] = set()
        self._lanes: dict[str, _Lane] = {}

    async def close(self) -> None:
        workers = [task for lane in self._lanes.values() for task in lane.workers]
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        self._lanes.clear()
        await self._stack.aclose()

    # -- the request ------------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["endpoint"]
        try:
            endpoint = self._state.get(name)
        except KeyError:
            raise errors.endpoint_not_found(name) from None
        endpoint.stats.invocations += 1
        try:
            job = self._job(request, endpoint)
            job.fault, job.decision = endpoint.fault, endpoint.active.decide()
            count(endpoint.stats, job.decision)
            if job.decision.error == "connection_drop":
                raise DropConnection
            if job.decision.error not in _MODEL_FAULTS:
                err = endpoint.active.api_error(job.decision, name)
                if err is not None:
                    raise err
            await request.read()  # inline bodies are not used; drain so the client sees the answer
            config = endpoint.config.async_inference
            await self._ensure_buckets(config.output_path, config.failure_path)
            self._lane(endpoint).queue.put_nowait(job)
        except asyncio.QueueFull:
            endpoint.stats.errors += 1
            raise errors.simple_error(
                "service_unavailable",
                f"The async queue of endpoint {name} is full; retry later.",
            ) from None
        except ApiError:
            endpoint.stats.errors += 1
            raise
        return web.json_response(
            {"InferenceId": job.inference_id},
            status=202,
            headers={OUTPUT_LOCATION: job.output, FAILURE_LOCATION: job.failure},
        )

    def _job(self, request: web.Request, endpoint: Endpoint) -> _Job:
        h = request.headers
        location = h.get(_SM + "InputLocation")
        if not location:
            raise errors.validation_error("InputLocation is required.")
        match = _INPUT_LOCATION.match(location)
        if len(location) > 1024 or match is None:
            raise _constraint(
                "inputLocation",
                location,
                "Member must satisfy regular expression pattern: ^(https|s3)://([^/]+)/?(.*)$",
            )
        if match.group(1) != "s3":
            raise errors.validation_error("The emulator reads only s3:// input locations.")
        inference_id = h.get(_SM + "Inference-Id") or str(uuid.uuid4())
        if len(inference_id) > 64 or not _INFERENCE_ID.match(inference_id):
            raise _constraint(
                "inferenceId",
                inference_id,
                "Member must have length less than or equal to 64 and be printable",
            )
        custom = h.get(_SM + "Custom-Attributes")
        if custom is not None and len(custom) > 1024:
            raise _constraint("customAttributes", "***", "Member must have length <= 1024")
        ttl = _int_header(request, "RequestTTLSeconds", "requestTTLSeconds", TTL_RANGE)
        timeout = _int_header(
            request, "InvocationTimeoutSeconds", "invocationTimeoutSeconds", TIMEOUT_RANGE
        )
        config = endpoint.config.async_inference
        name = str(uuid.uuid4())
        return _Job(
            endpoint=endpoint.name,
            inference_id=inference_id,
            input=location,
            output=f"{config.output_path.rstrip('/')}/{name}.out",
            failure=f"{config.failure_path.rstrip('/')}/{name}-error.out",
            content_type=h.get(_SM + "Content-Type"),
            accept=h.get(_SM + "Accept"),
            custom_attributes=custom,
            ttl_s=ttl,
            timeout_s=timeout,
            accepted_at=asyncio.get_running_loop().time(),
        )

    # -- S3 ---------------------------------------------------------------------------------------
    async def _s3(self) -> Any:
        async with self._client_lock:
            if self._client is None:
                self._client = await self._stack.enter_async_context(
                    aioboto3.Session().client(
                        "s3",
                        endpoint_url=self._s3_endpoint_url,
                        region_name=errors.REGION,
                        config=botocore.config.Config(retries={"total_max_attempts": 3}),
                    )
                )
        return self._client

    async def _ensure_buckets(self, *paths: str) -> None:
        for bucket in {_split(path)[0] for path in paths} - self._buckets:
            s3 = await self._s3()
            try:
                await s3.create_bucket(Bucket=bucket)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
            self._buckets.add(bucket)

    async def _put(self, uri: str, body: bytes, content_type: str) -> None:
        bucket, key = _split(uri)
        s3 = await self._s3()
        await s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)

    async def _read_input(self, uri: str) -> bytes | str:
        """The input bytes, or the failure reason when they cannot be read."""
        bucket, key = _split(uri)
        s3 = await self._s3()
        try:
            response = await s3.get_object(Bucket=bucket, Key=key)
            async with response["Body"] as body:
                if int(response.get("ContentLength", 0)) > MAX_INPUT_BYTES:
                    return f"The input at {uri} is larger than 1 GB."
                data: bytes = await body.read()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            return f"Failed to download the input from {uri}: {code}."
        return data

    # -- the background ---------------------------------------------------------------------------
    def _lane(self, endpoint: Endpoint) -> _Lane:
        lane = self._lanes.get(endpoint.name)
        if lane is None:
            config = endpoint.config.async_inference
            lane = _Lane(asyncio.Queue(maxsize=config.max_queue))
            lane.workers = [
                asyncio.create_task(self._work(lane), name=f"async-{endpoint.name}-{i}")
                for i in range(config.workers)
            ]
            self._lanes[endpoint.name] = lane
        return lane

    async def _work(self, lane: _Lane) -> None:
        while True:
            job = await lane.queue.get()
            try:
                await self._run(job)
            except Exception:
                log.exception("async invocation on endpoint %s failed", job.endpoint)
            finally:
                lane.queue.task_done()

    async def _run(self, job: _Job) -> None:
        waited = asyncio.get_running_loop().time() - job.accepted_at
        if waited > job.ttl_s:
            await self._fail(
                job, f"Request expired: it waited longer than RequestTTLSeconds ({job.ttl_s})."
            )
            return
        body = await self._read_input(job.input)
        if isinstance(body, str):
            await self._fail(job, body)
            return
        endpoint = self._state.get(job.endpoint)
        try:
            async with asyncio.timeout(job.timeout_s):
                output, content_type = await self._invoke(endpoint, job, body)
        except TimeoutError:
            await self._fail(
                job,
                f"Invocation timed out: the model did not finish within "
                f"InvocationTimeoutSeconds ({job.timeout_s}).",
            )
            return
        except ModelFailure as failure:
            reason = failure.message
            if failure.timed_out:
                reason = f"Invocation timed out: {failure.message}"
            await self._fail(job, reason)
            return
        await self._put(job.output, output, content_type)
        log.debug("async invocation %s on %s completed", job.inference_id, job.endpoint)

    async def _invoke(self, endpoint: Endpoint, job: _Job, body: bytes) -> tuple[bytes, str]:
        fault, decision = job.fault, job.decision
        if decision.latency_s:
            await asyncio.sleep(decision.latency_s)
        if decision.error == "model_error":
            raise ModelFailure(fault.original_status, fault.original_message)
        if decision.error == "model_timeout":
            await asyncio.sleep(fault.timeout_after_ms / 1000)
            raise ModelFailure(None, errors.MODEL_TIMEOUT_MESSAGE, timed_out=True)
        reply = await endpoint.model.invoke(
            ModelRequest(
                endpoint=endpoint.name,
                variant=endpoint.config.variants[0],
                body=body,
                streaming=False,
                content_type=job.content_type,
                accept=job.accept,
                custom_attributes=job.custom_attributes,
                inference_id=job.inference_id,
            )
        )
        async with aclosing(reply.chunks) as chunks:
            output = b"".join([chunk async for chunk in chunks])
        return output, reply.content_type

    async def _fail(self, job: _Job, reason: str) -> None:
        with contextlib.suppress(ClientError, BotoCoreError):
            await self._put(job.failure, reason.encode(), "text/plain; charset=utf-8")
            return
        log.warning("could not write the failure object of %s", job.inference_id)


ASYNC_INVOCATIONS = web.AppKey("async_invocations", AsyncInvocations)


async def invoke_endpoint_async(request: web.Request) -> web.Response:
    return await request.app[ASYNC_INVOCATIONS].handle(request)


def install(app: web.Application, state: EmulatorState, s3_endpoint_url: str | None) -> None:
    """Serve InvokeEndpointAsync on ``app``; workers stop when the app is cleaned up."""
    service = AsyncInvocations(state, s3_endpoint_url)
    app[ASYNC_INVOCATIONS] = service

    async def _close(_: web.Application) -> None:
        await service.close()

    app.on_cleanup.append(_close)
    app.router.add_post("/endpoints/{endpoint}/async-invocations", invoke_endpoint_async)
