"""Answering for an async job from its job id alone: state, inline result, watch, output.

Why a module of its own: this is the side any replica serves for any job. It keeps no state:
the job id (verified by core.job_ids, before any I/O) says where the output and failure objects
will appear, and S3 says whether they have. A job is COMPLETED when its output object exists,
FAILED when its failure object does, EXPIRED when neither exists past its deadline, else PENDING.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager

from sagewire.config.async_jobs import AsyncJobSettings
from sagewire.config.settings import RouteSettings
from sagewire.core.async_types import (
    JobResult,
    JobState,
    JobStatus,
    ObjectInfo,
    ObjectStream,
    S3Location,
)
from sagewire.core.backoff import backoff_delay
from sagewire.core.errors import ErrorKind, SagewireError
from sagewire.core.job_ids import JobIdCodec, JobToken
from sagewire.core.job_scope import check_token
from sagewire.core.ports import CompletionSignal, ObjectStorePort, OpenGuard, RouteGuard
from sagewire.observability import calls, signals

# Failure objects hold the model's error text; more than this is not worth a gRPC message.
FAILURE_REASON_BYTES = 4096
# Past the result deadline, one more poll lands just after it, not just before.
_EXPIRY_MARGIN_S = 0.05


class PollOnly:
    """The default CompletionSignal: no notifications, watchers just poll on their backoff."""

    async def wait(self, inference_id: str, timeout_s: float) -> None:
        await asyncio.sleep(timeout_s)


def job_codec(settings: AsyncJobSettings) -> JobIdCodec | None:
    """The codec of the configured keys; None when there are none (no async routes)."""
    keys = settings.keys()
    return JobIdCodec(keys, settings.job_id_retention_s) if keys else None


def job_not_found() -> SagewireError:
    """Another caller's job: answered as if it never existed (docs/security.md)."""
    return SagewireError(
        message="no such job: pass a job_id that SubmitAsync or UploadAsync returned to you",
        kind=ErrorKind.NOT_FOUND,
        reason="JOB_NOT_FOUND",
    )


def not_configured() -> SagewireError:
    return SagewireError(
        message="async inference is not configured on this sagewire (no async_jobs.job_id_keys)",
        kind=ErrorKind.FAILED_PRECONDITION,
        reason="ASYNC_NOT_CONFIGURED",
    )


def _location(uri: str) -> S3Location:
    # Job ids are authenticated and their locations checked (core.job_ids, core.job_scope).
    location = S3Location.parse(uri)
    assert location is not None
    return location


async def _none() -> None:
    return None


class JobResults:
    """GetAsyncResult, WatchAsync and ReadAsyncOutput, transport-neutral. `routes` are the
    configured routes every job id is checked against."""

    def __init__(
        self,
        settings: AsyncJobSettings,
        routes: Mapping[str, RouteSettings],
        codec: JobIdCodec | None,
        store: ObjectStorePort,
        signal: CompletionSignal | None = None,
        clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
        guard: RouteGuard | None = None,
    ) -> None:
        self._settings = settings
        self._routes = routes
        # Whose jobs the current caller may read, and whether it may use their route.
        self._guard = guard or OpenGuard()
        self._codec = codec
        self._store = store
        self._signal = signal or PollOnly()
        self._clock = clock
        self._jitter = jitter
        self._open_streams = 0

    def token(self, job_id: str) -> JobToken:
        """Verify `job_id` (no I/O): INVALID_ARGUMENT when forged or malformed, NOT_FOUND when
        expired or submitted by another caller, FAILED_PRECONDITION when it names what the
        configuration does not serve, PERMISSION_DENIED when the caller may no longer use the
        job's route."""
        if self._codec is None:
            raise not_configured()
        token = self._codec.decode(job_id, self._clock())
        check_token(token, self._routes)
        if token.owner != self._guard.owner():
            raise job_not_found()
        # A route name sagewire signed and serves: a bounded metric label.
        calls.set_model(token.model)
        self._guard.admit(token.model)
        return token

    async def result(self, job_id: str) -> JobResult:
        token = self.token(job_id)
        status = await self._probe(token)
        if status.state.terminal:
            signals.job_finished(status.state.value)
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
                    signals.job_finished(status.state.value)
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
        location = _location(token.output_location)
        with self._stream_slot():
            async with self._store.open(location) as stream:
                if stream is not None:
                    yield stream
                    return
            status = await self._probe(token)
            if status.state is not JobState.COMPLETED:
                raise _not_completed(status.state)
            # It appeared while being opened (a read just after the write, seen in CI against
            # moto): open it once more before asking the caller to retry.
            async with self._store.open(location) as stream:
                if stream is None:
                    raise SagewireError(
                        message="the job's output appeared while being opened; retry",
                        kind=ErrorKind.UNAVAILABLE,
                        reason="OUTPUT_NOT_READY",
                        retry_after_s=0.1,
                    )
                yield stream

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
                # This replica's capacity, not the caller's quota: UNAVAILABLE is what gRPC
                # retry policies retry (docs/resilience.md).
                kind=ErrorKind.UNAVAILABLE,
                reason="STREAM_LIMIT",
                retry_after_s=1.0,
                metadata={"limit": str(limit)},
            )
        self._open_streams += 1
        try:
            yield
        finally:
            self._open_streams -= 1


def _not_completed(state: JobState) -> SagewireError:
    """FAILED_PRECONDITION for reading the output of a job in `state` (not COMPLETED)."""
    hint = {
        JobState.PENDING: "it is still pending; WatchAsync tells when it completes",
        JobState.FAILED: "it failed; GetAsyncResult gives the failure reason",
        JobState.EXPIRED: "it expired without a result",
    }[state]
    return SagewireError(
        message=f"the job has no output to read: {hint}",
        kind=ErrorKind.FAILED_PRECONDITION,
        reason="JOB_NOT_COMPLETED",
        metadata={"state": state.value},
    )
