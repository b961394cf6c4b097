"""Submitting async jobs: an inline body, a streamed upload or an existing S3 input, handed to
InvokeEndpointAsync, answered with a job id. core.job_results answers for the job later.

No per-job state lives in sagewire: everything about a job is in its authenticated job id
(core.job_ids) and in S3, so any replica sharing the configuration answers for any job.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace

from sagewire.config.async_jobs import INVOCATION_TIMEOUT_RANGE, REQUEST_TTL_RANGE
from sagewire.config.operations import Operation
from sagewire.config.settings import OptionName, RouteMode, Settings
from sagewire.core.async_types import AsyncAccepted, AsyncCall, AsyncEndpointRequest, S3Location
from sagewire.core.errors import ErrorKind, SagewireError, deadline_exceeded, invalid_argument
from sagewire.core.job_ids import JobIdCodec, JobToken
from sagewire.core.job_results import not_configured
from sagewire.core.job_scope import check_accepted
from sagewire.core.ports import AsyncInferencePort, ObjectStorePort
from sagewire.core.routes import Route, RouteTable
from sagewire.core.types import InvocationOptions
from sagewire.core.validation import validate_media_type, validate_options
from sagewire.observability import signals

MAX_INPUT_LOCATION_CHARS = 1024


@dataclass(frozen=True, slots=True)
class IssuedJob:
    job_id: str
    token: JobToken


def _wrong_mode(route: Route, rpc: str) -> SagewireError:
    return SagewireError(
        message=f"{rpc} needs a model of mode async; model {route.name!r} has mode "
        f"{route.mode.value}",
        kind=ErrorKind.FAILED_PRECONDITION,
        reason="WRONG_MODE",
        metadata={"model": route.name, "mode": route.mode.value},
    )


def _in_range(field: str, value: int, bounds: tuple[int, int]) -> int:
    low, high = bounds
    if not low <= value <= high:
        raise invalid_argument(
            field, f"must be {low}–{high} seconds (SageMaker's range); got {value}"
        )
    return value


class AsyncJobs:
    """SubmitAsync and UploadAsync, transport-neutral. `codec` is None when no job-id key is
    configured (then there are no async routes, and every call says so)."""

    def __init__(
        self,
        settings: Settings,
        routes: RouteTable,
        runtime: AsyncInferencePort,
        store: ObjectStorePort,
        codec: JobIdCodec | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings.async_jobs
        self._routes = routes
        self._runtime = runtime
        self._store = store
        self._codec = codec
        self._clock = clock

    async def submit(
        self, call: AsyncCall, body: bytes | None = None, input_location: str = ""
    ) -> IssuedJob:
        """Stage `body` (or check `input_location`), call InvokeEndpointAsync, issue the id."""
        route, request = self._prepare(call, "SubmitAsync")
        staged = self._staging(route) if body is not None else None
        source = str(staged) if staged else self._allowed_input(route, input_location)
        timeout = route.settings.timeout_s
        if call.time_remaining_s is not None:
            timeout = min(timeout, max(call.time_remaining_s, 0.0))
        async with route.slot():
            try:
                async with asyncio.timeout(timeout):
                    if staged is not None and body is not None:
                        await self._store.put(staged, body, request.content_type)
                        signals.uploaded(len(body))
                    accepted = await self._runtime.invoke_endpoint_async(
                        replace(request, input_location=source)
                    )
            except TimeoutError:
                raise deadline_exceeded(f"submitting to model {route.name!r}", timeout) from None
        signals.job_submitted()
        return self._issue(route, request, accepted)

    async def upload(self, call: AsyncCall, chunks: AsyncIterator[bytes]) -> tuple[IssuedJob, int]:
        """Stream `chunks` to S3 as they arrive, then submit; returns the job and input size.

        The caller's deadline bounds the whole upload (cancellation aborts it); a caller who
        stops sending for `upload_idle_timeout_s` is cut off.
        """
        route, request = self._prepare(call, "UploadAsync")
        staged = self._staging(route)
        async with route.slot():
            size = await self._store.put_stream(staged, self._bounded(chunks), request.content_type)
            signals.uploaded(size)
            timeout = route.settings.timeout_s
            try:
                async with asyncio.timeout(timeout):
                    accepted = await self._runtime.invoke_endpoint_async(
                        replace(request, input_location=str(staged))
                    )
            except TimeoutError:
                raise deadline_exceeded(f"submitting to model {route.name!r}", timeout) from None
        signals.job_submitted()
        return self._issue(route, request, accepted), size

    async def _bounded(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        limit, idle = self._settings.max_input_bytes, self._settings.upload_idle_timeout_s
        total = 0
        while True:
            try:
                async with asyncio.timeout(idle):
                    chunk = await anext(chunks)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise SagewireError(
                    message=f"no upload message arrived for {idle:g}s; the upload was abandoned",
                    kind=ErrorKind.DEADLINE_EXCEEDED,
                    reason="UPLOAD_IDLE_TIMEOUT",
                ) from None
            total += len(chunk)
            if total > limit:
                raise invalid_argument(
                    "chunk",
                    f"the upload passed {limit} bytes, the largest async input accepted",
                    reason="PAYLOAD_TOO_LARGE",
                )
            yield chunk

    def _prepare(self, call: AsyncCall, rpc: str) -> tuple[Route, AsyncEndpointRequest]:
        """Resolve, check the route's policy and SageMaker's limits: all before any I/O."""
        self._require_codec()
        route = self._routes.resolve(call.model)
        if route.mode is not RouteMode.ASYNC:
            raise _wrong_mode(route, rpc)
        caller = InvocationOptions(
            custom_attributes=call.custom_attributes, inference_id=call.inference_id
        )
        route.check_allowed(caller, Operation.ASYNC)
        for name, value in (
            (OptionName.REQUEST_TTL_SECONDS, call.request_ttl_seconds),
            (OptionName.INVOCATION_TIMEOUT_SECONDS, call.invocation_timeout_seconds),
        ):
            if value and name.value not in route.allowed:
                allowed = ", ".join(sorted(route.allowed)) or "none"
                raise invalid_argument(
                    f"options.{name.value}",
                    f"is not allowed on model {route.name!r} (allowed: {allowed})",
                    reason="OPTION_NOT_ALLOWED",
                )
        options = caller.over(InvocationOptions(custom_attributes=route.defaults.custom_attributes))
        validate_options(options)
        defaults = route.settings.async_
        ttl = _in_range(
            "options.request_ttl_seconds",
            call.request_ttl_seconds or defaults.request_ttl_seconds,
            REQUEST_TTL_RANGE,
        )
        invocation_timeout = _in_range(
            "options.invocation_timeout_seconds",
            call.invocation_timeout_seconds or defaults.invocation_timeout_seconds,
            INVOCATION_TIMEOUT_RANGE,
        )
        content_type = call.content_type or route.settings.content_type
        accept = call.accept or route.settings.accept
        validate_media_type("content_type", content_type)
        validate_media_type("accept", accept)
        return route, AsyncEndpointRequest(
            endpoint=route.settings.endpoint,
            input_location="",
            content_type=content_type,
            accept=accept,
            custom_attributes=options.custom_attributes,
            inference_id=options.inference_id or uuid.uuid4().hex,
            request_ttl_seconds=ttl,
            invocation_timeout_seconds=invocation_timeout,
        )

    def _staging(self, route: Route) -> S3Location:
        own = route.settings.async_
        bucket = own.staging_bucket or self._settings.staging_bucket
        prefix = (
            own.staging_prefix if own.staging_prefix is not None else self._settings.staging_prefix
        )
        if not bucket:
            raise SagewireError(
                message=f"model {route.name!r} has no staging bucket, so it only accepts "
                "input_location; the operator can set async_jobs.staging_bucket",
                kind=ErrorKind.FAILED_PRECONDITION,
                reason="STAGING_NOT_CONFIGURED",
                metadata={"model": route.name},
            )
        return S3Location(bucket, f"{prefix}{route.name}/{uuid.uuid4().hex}")

    def _allowed_input(self, route: Route, uri: str) -> str:
        if not uri:
            raise invalid_argument(
                "input", "set one of `body`, `json` or `input_location` (an s3:// URI)"
            )
        location = S3Location.parse(uri) if len(uri) <= MAX_INPUT_LOCATION_CHARS else None
        if location is None:
            raise invalid_argument(
                "input_location",
                f"must be s3://<bucket>/<key> in printable ASCII, at most "
                f"{MAX_INPUT_LOCATION_CHARS} characters",
            )
        prefixes = route.settings.async_.allowed_input_prefixes
        if not any(location.under(prefix) for prefix in prefixes):
            rule = (
                f"allowed prefixes: {', '.join(prefixes)}"
                if prefixes
                else "it accepts no input_location; send the input inline or with UploadAsync"
            )
            raise SagewireError(
                message=f"input_location {uri} is not under an allowed input prefix of model "
                f"{route.name!r} ({rule})",
                kind=ErrorKind.PERMISSION_DENIED,
                reason="INPUT_LOCATION_NOT_ALLOWED",
                metadata={"model": route.name},
            )
        return uri

    def _issue(
        self, route: Route, request: AsyncEndpointRequest, accepted: AsyncAccepted
    ) -> IssuedJob:
        check_accepted(
            route.name, route.settings, accepted.output_location, accepted.failure_location
        )
        now = int(self._clock())
        token = JobToken(
            model=route.name,
            endpoint=request.endpoint,
            inference_id=accepted.inference_id or request.inference_id,
            output_location=accepted.output_location,
            failure_location=accepted.failure_location,
            submitted_at=now,
            expires_at=now + request.request_ttl_seconds + request.invocation_timeout_seconds,
            owner=self._routes.guard.owner(),
        )
        return IssuedJob(self._require_codec().encode(token), token)

    def _require_codec(self) -> JobIdCodec:
        if self._codec is None:
            raise not_configured()
        return self._codec
