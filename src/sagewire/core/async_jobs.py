"""Async inference: submit a job (inline body, streamed upload or existing S3 input) and answer
for it later (state, inline result, watch, output stream) from its job id alone.

No per-job state lives in sagewire: everything about a job is in its authenticated job id
(core.job_ids) and in S3, so any replica sharing the configuration answers for any job.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, replace

from sagewire.config.async_jobs import INVOCATION_TIMEOUT_RANGE, REQUEST_TTL_RANGE
from sagewire.config.settings import OptionName, RouteMode, Settings
from sagewire.core.async_types import (
    AsyncAccepted,
    AsyncCall,
    AsyncEndpointRequest,
    JobResult,
    JobState,
    JobStatus,
    ObjectInfo,
    ObjectStream,
    S3Location,
)
from sagewire.core.backoff import backoff_delay
from sagewire.core.errors import ErrorKind, SagewireError, deadline_exceeded, invalid_argument
from sagewire.core.job_ids import JobIdCodec, JobToken
from sagewire.core.ports import AsyncInferencePort, CompletionSignal, ObjectStorePort
from sagewire.core.routes import Route, RouteTable
from sagewire.core.types import InvocationOptions
from sagewire.core.validation import validate_media_type, validate_options

# Failure objects hold the model's error text; more than this is not worth a gRPC message.
FAILURE_REASON_BYTES = 4096
MAX_INPUT_LOCATION_CHARS = 1024
# Past the result deadline, one more poll lands just after it, not just before.
_EXPIRY_MARGIN_S = 0.05


class PollOnly:
    """The default CompletionSignal: no notifications, watchers just poll on their backoff."""

    async def wait(self, inference_id: str, timeout_s: float) -> None:
        await asyncio.sleep(timeout_s)


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


async def _none() -> None:
    return None


class AsyncJobs:
    """Transport-neutral async inference operations."""

    def __init__(
        self,
        settings: Settings,
        routes: RouteTable,
        runtime: AsyncInferencePort,
        store: ObjectStorePort,
        signal: CompletionSignal | None = None,
        clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._settings = settings.async_jobs
        self._routes = routes
        self._runtime = runtime
        self._store = store
        self._signal = signal or PollOnly()
        self._clock = clock
        self._jitter = jitter
        keys = self._settings.keys()
        self._codec = JobIdCodec(keys, self._settings.job_id_retention_s) if keys else None
        self._open_streams = 0

    # -- submitting ---------------------------------------------------------------------------
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
        with route.slot():
            try:
                async with asyncio.timeout(timeout):
                    if staged is not None and body is not None:
                        await self._store.put(staged, body, request.content_type)
                    accepted = await self._runtime.invoke_endpoint_async(
                        replace(request, input_location=source)
                    )
            except TimeoutError:
                raise deadline_exceeded(f"submitting to model {route.name!r}", timeout) from None
        return self._issue(route, request, accepted)

    async def upload(self, call: AsyncCall, chunks: AsyncIterator[bytes]) -> tuple[IssuedJob, int]:
        """Stream `chunks` to S3 as they arrive, then submit; returns the job and input size.

        The caller's deadline bounds the whole upload (cancellation aborts it); a caller who
        stops sending for `upload_idle_timeout_s` is cut off.
        """
        route, request = self._prepare(call, "UploadAsync")
        staged = self._staging(route)
        with route.slot():
            size = await self._store.put_stream(staged, self._bounded(chunks), request.content_type)
            timeout = route.settings.timeout_s
            try:
                async with asyncio.timeout(timeout):
                    accepted = await self._runtime.invoke_endpoint_async(
                        replace(request, input_location=str(staged))
                    )
            except TimeoutError:
                raise deadline_exceeded(f"submitting to model {route.name!r}", timeout) from None
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
        route.check_allowed(caller)
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
        locations = [accepted.output_location]
        if accepted.failure_location:
            locations.append(accepted.failure_location)
        if any(S3Location.parse(uri) is None for uri in locations):
            raise SagewireError(
                message=f"SageMaker accepted the job on endpoint {request.endpoint!r} but "
                "answered with an output location sagewire cannot read (not s3://)",
                kind=ErrorKind.INTERNAL,
                reason="UNREADABLE_OUTPUT_LOCATION",
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
        )
        return IssuedJob(self._require_codec().encode(token), token)

    # -- answering for a job ------------------------------------------------------------------
    def _require_codec(self) -> JobIdCodec:
        if self._codec is None:
            raise SagewireError(
                message="async inference is not configured on this sagewire (no "
                "async_jobs.job_id_keys)",
                kind=ErrorKind.FAILED_PRECONDITION,
                reason="ASYNC_NOT_CONFIGURED",
            )
        return self._codec

    def token(self, job_id: str) -> JobToken:
        """Verify `job_id` (no I/O): INVALID_ARGUMENT when forged or malformed, NOT_FOUND when
        expired."""
        return self._require_codec().decode(job_id, self._clock())

    async def result(self, job_id: str) -> JobResult:
        token = self.token(job_id)
        status = await self._probe(token)
        body: bytes | None = None
        if status.output is not None and status.output.size <= self._settings.inline_output_bytes:
            body = await self._read_all(_location(token.output_location), status.output)
        return JobResult(status, token.expires_at, body)

    async def watch(self, job_id: str) -> AsyncGenerator[JobStatus, None]:
        """Each state change until a terminal state, polling S3 with capped exponential backoff
        and jitter. Runs until the job ends or the caller goes away (cancellation)."""
        token = self.token(job_id)
        with self._stream_slot():
            last: JobState | None = None
            attempt = 0
            while True:
                status = await self._probe(token)
                if status.state is not last:
                    last = status.state
                    yield status
                if status.state.terminal:
                    return
                delay = backoff_delay(
                    attempt,
                    self._settings.watch_poll_initial_s,
                    self._settings.watch_poll_max_s,
                    self._jitter,
                )
                attempt += 1
                until_expiry = token.expires_at - self._clock() + _EXPIRY_MARGIN_S
                await self._signal.wait(token.inference_id, max(min(delay, until_expiry), 0.0))

    @asynccontextmanager
    async def open_output(self, job_id: str) -> AsyncIterator[ObjectStream]:
        """The job's output streamed straight from S3; FAILED_PRECONDITION when there is none."""
        token = self.token(job_id)
        with self._stream_slot():
            async with self._store.open(_location(token.output_location)) as stream:
                if stream is None:
                    raise await self._no_output(token)
                yield stream

    async def _no_output(self, token: JobToken) -> SagewireError:
        status = await self._probe(token)
        if status.state is JobState.COMPLETED:  # appeared just now
            return SagewireError(
                message="the job's output appeared while being opened; retry",
                kind=ErrorKind.UNAVAILABLE,
                reason="OUTPUT_NOT_READY",
                retry_after_s=0.1,
            )
        hint = {
            JobState.PENDING: "it is still pending; WatchAsync tells when it completes",
            JobState.FAILED: "it failed; GetAsyncResult gives the failure reason",
            JobState.EXPIRED: "it expired without a result",
        }[status.state]
        return SagewireError(
            message=f"the job has no output to read: {hint}",
            kind=ErrorKind.FAILED_PRECONDITION,
            reason="JOB_NOT_COMPLETED",
            metadata={"state": status.state.value},
        )

    async def _probe(self, token: JobToken) -> JobStatus:
        """The job's state from S3: output object → COMPLETED, failure object → FAILED, neither
        past the deadline → EXPIRED, else PENDING."""
        failure = _location(token.failure_location) if token.failure_location else None
        found = await asyncio.gather(
            self._store.head(_location(token.output_location)),
            self._store.head(failure) if failure is not None else _none(),
            return_exceptions=True,
        )
        for item in found:
            if isinstance(item, BaseException):
                raise item
        output, failed = found
        now = self._clock()
        if isinstance(output, ObjectInfo):
            return JobStatus(JobState.COMPLETED, now, output=output)
        if isinstance(failed, ObjectInfo) and failure is not None:
            reason = await self._store.read(failure, FAILURE_REASON_BYTES) if failed.size else b""
            text = (reason or b"").decode("utf-8", errors="replace").strip()
            return JobStatus(JobState.FAILED, now, failure_reason=text)
        if now >= token.expires_at:
            return JobStatus(JobState.EXPIRED, now)
        return JobStatus(JobState.PENDING, now)

    async def _read_all(self, location: S3Location, info: ObjectInfo) -> bytes:
        if info.size == 0:
            return b""
        body = await self._store.read(location, info.size)
        if body is None or len(body) != info.size:
            raise SagewireError(
                message="the job's output changed while being read; retry",
                kind=ErrorKind.UNAVAILABLE,
                reason="OUTPUT_NOT_READY",
                retry_after_s=0.1,
            )
        return body

    @contextmanager
    def _stream_slot(self) -> Iterator[None]:
        limit = self._settings.max_open_streams
        if self._open_streams >= limit:
            raise SagewireError(
                message=f"this sagewire already serves {limit} WatchAsync/ReadAsyncOutput "
                "streams; retry shortly or on another replica",
                kind=ErrorKind.RESOURCE_EXHAUSTED,
                reason="STREAM_LIMIT",
                retry_after_s=1.0,
                metadata={"limit": str(limit)},
            )
        self._open_streams += 1
        try:
            yield
        finally:
            self._open_streams -= 1


def _location(uri: str) -> S3Location:
    # Job ids are authenticated and their locations were checked when issued.
    location = S3Location.parse(uri)
    assert location is not None
    return location
