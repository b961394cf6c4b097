"""`AsyncClient`: sagewire's RPCs as typed asyncio calls on one grpc.aio channel.

Every method converts arguments to the request message, makes the call with the default
deadline and the bearer token, and converts the answer (or the failure, into one of
`sagewire.client.errors`). Short calls (invoke, stream, submit, get, models) use
`ChannelOptions.timeout` unless given `timeout=`; long ones (upload, watch, wait, read_output,
converse) have no deadline unless given one. `timeout=None` always means "no deadline".
"""

from __future__ import annotations

import json as jsonlib
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import nullcontext
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import grpc

from sagewire.client import errors
from sagewire.client.call_status import CallStatus
from sagewire.client.channel import ChannelOptions
from sagewire.client.converse import ConverseSession
from sagewire.client.results import (
    InvokeResult,
    Job,
    JobEvent,
    JobResult,
    JobState,
    ModelInfo,
    StreamPart,
    _time,
)
from sagewire.v1 import (
    async_jobs_pb2,
    common_pb2,
    inference_service_pb2_grpc,
    invoke_pb2,
    model_service_pb2,
    model_service_pb2_grpc,
)


class _Unset:
    """Marks "use the default deadline" apart from None ("no deadline")."""


DEFAULT: Final = _Unset()
Timeout = float | None | _Unset
# Called with (bytes done, total bytes or None when unknown).
Progress = Callable[[int, int | None], None]
UploadSource = str | Path | bytes | Iterable[bytes] | AsyncIterable[bytes]

JSON_TYPE = "application/json"
# Results parse `body` themselves (exact integers; sagewire.client.results), so the client asks
# sagewire for the bytes alone: no parse on the server, a JSON answer is not sent twice.
BODY_ONLY = common_pb2.RESPONSE_VIEW_BODY
UPLOAD_CHUNK_BYTES = 1024 * 1024
# The error when grpc.aio's local INTERNAL is all an ended upload ever reports.
_UPLOAD_LOCAL_ONLY = (
    "the upload ended while this client was still sending it, and grpc.aio reported its own "
    "INTERNAL in place of the server's status (docs/errors.md)"
)


def _json_bytes(value: Any) -> bytes:
    # Exact: Python ints of any size stay ints; NaN/Infinity are not JSON and raise ValueError.
    return jsonlib.dumps(value, separators=(",", ":"), allow_nan=False).encode()


def _payload(json: Any, body: bytes | None, content_type: str) -> tuple[bytes, str]:
    """(body, content type) from exactly one of `json` (any JSON-able value) and `body`."""
    if (json is None) == (body is None):
        raise TypeError("pass exactly one of json= or body=")
    if body is not None:
        return body, content_type
    return _json_bytes(json), content_type or JSON_TYPE


def _framing(name: str | None) -> common_pb2.Framing.ValueType:
    if not name:
        return common_pb2.FRAMING_UNSPECIFIED
    return common_pb2.Framing.Value(f"FRAMING_{name.upper()}")


class AsyncClient:
    """An asyncio client for one sagewire target; use it as `async with AsyncClient(...) as c`.

    Args are those of `ChannelOptions` (target, tls, ca_file, cert_file, key_file,
    server_name, token, timeout, retries, keepalive_s, max_message_bytes), or pass
    `options=ChannelOptions(...)`.
    """

    def __init__(
        self, target: str | None = None, *, options: ChannelOptions | None = None, **kwargs: Any
    ) -> None:
        if target is not None:
            kwargs["target"] = target
        self.options = options or ChannelOptions(**kwargs)
        self._channel = self.options.aio_channel()
        self._inference = inference_service_pb2_grpc.InferenceServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close(None)

    # -- call plumbing --------------------------------------------------------------------

    def _deadline(self, timeout: Timeout, long: bool = False) -> float | None:
        if isinstance(timeout, _Unset):
            return None if long else self.options.timeout
        return timeout

    async def _metadata(self) -> tuple[tuple[str, str], ...]:
        token = self.options.token
        if token is None:
            return ()
        if callable(token):
            made = token()
            token = await made if isinstance(made, Awaitable) else made
        return (("authorization", f"Bearer {token}"),)

    # -- real-time and streaming ----------------------------------------------------------

    async def invoke(
        self,
        model: str,
        *,
        json: Any = None,
        body: bytes | None = None,
        content_type: str = "",
        accept: str = "",
        options: Mapping[str, str] | None = None,
        timeout: Timeout = DEFAULT,
    ) -> InvokeResult:
        """One real-time inference (InvokeEndpoint). Raises a `SagewireError` subclass."""
        data, ctype = _payload(json, body, content_type)
        request = invoke_pb2.InvokeRequest(
            model=model,
            body=data,
            content_type=ctype,
            accept=accept,
            options=common_pb2.InvocationOptions(**(options or {})),
            view=BODY_ONLY,
        )
        try:
            answer = await self._inference.Invoke(
                request, timeout=self._deadline(timeout), metadata=await self._metadata()
            )
        except grpc.RpcError as exc:
            raise errors.from_rpc_error(exc) from None
        return InvokeResult(
            answer.body,
            answer.content_type,
            answer.invoked_production_variant,
            answer.custom_attributes,
            answer.new_session_id,
            answer.closed_session_id,
            answer.json if answer.HasField("json") else None,
            answer.endpoint_name,
        )

    async def stream(
        self,
        model: str,
        *,
        json: Any = None,
        body: bytes | None = None,
        content_type: str = "",
        accept: str = "",
        framing: str | None = None,
        options: Mapping[str, str] | None = None,
        timeout: Timeout = DEFAULT,
    ) -> AsyncIterator[StreamPart]:
        """Streaming inference: the parts as they arrive (`framing`: raw, lines or sse; None
        uses the route's). Stopping the iteration cancels the call and the model's stream."""
        data, ctype = _payload(json, body, content_type)
        request = invoke_pb2.InvokeStreamRequest(
            model=model,
            body=data,
            content_type=ctype,
            accept=accept,
            framing=_framing(framing),
            options=common_pb2.InvocationOptions(**(options or {})),
            view=BODY_ONLY,
        )
        call = self._inference.InvokeStream(
            request, timeout=self._deadline(timeout), metadata=await self._metadata()
        )
        try:
            async for message in call:
                view = message.json if message.HasField("json") else None
                yield StreamPart(message.body, message.index, view)
        except grpc.RpcError as exc:
            raise errors.from_rpc_error(exc) from None
        finally:
            call.cancel()

    def converse(
        self,
        model: str,
        *,
        content_type: str = "",
        accept: str = "",
        framing: str | None = None,
        options: Mapping[str, str] | None = None,
        timeout: Timeout = DEFAULT,
    ) -> ConverseSession:
        """A Converse session; `async with client.converse("chat") as session:` opens it."""
        return ConverseSession(
            self._inference,
            model,
            content_type=content_type,
            accept=accept,
            framing=_framing(framing),
            options=common_pb2.InvocationOptions(**(options or {})),
            timeout=self._deadline(timeout, long=True),
            metadata=self._metadata,
        )

    # -- async jobs -----------------------------------------------------------------------

    async def submit(
        self,
        model: str,
        *,
        json: Any = None,
        body: bytes | None = None,
        input_location: str | None = None,
        content_type: str = "",
        accept: str = "",
        options: Mapping[str, Any] | None = None,
        timeout: Timeout = DEFAULT,
    ) -> Job:
        """Submits an async job with an inline input or an s3:// location the route allows."""
        request = async_jobs_pb2.SubmitAsyncRequest(
            model=model,
            accept=accept,
            options=async_jobs_pb2.AsyncOptions(**(options or {})),
        )
        if input_location is not None:
            if json is not None or body is not None:
                raise TypeError("pass input_location= alone, without json= or body=")
            request.input_location = input_location
            request.content_type = content_type
        else:
            request.body, request.content_type = _payload(json, body, content_type)
        try:
            answer = await self._inference.SubmitAsync(
                request, timeout=self._deadline(timeout), metadata=await self._metadata()
            )
        except grpc.RpcError as exc:
            raise errors.from_rpc_error(exc) from None
        return Job.of(answer.job)

    async def upload(
        self,
        model: str,
        source: UploadSource,
        *,
        content_type: str = "",
        accept: str = "",
        options: Mapping[str, Any] | None = None,
        progress: Progress | None = None,
        timeout: Timeout = DEFAULT,
    ) -> Job:
        """Streams a large input (a file path, bytes, or an (async) iterable of chunks) to
        the route's S3 staging and submits it; memory stays bounded by one chunk."""
        header = async_jobs_pb2.UploadAsyncHeader(
            model=model,
            content_type=content_type,
            accept=accept,
            options=async_jobs_pb2.AsyncOptions(**(options or {})),
        )
        total = _size_of(source)

        async def requests() -> AsyncIterator[async_jobs_pb2.UploadAsyncRequest]:
            yield async_jobs_pb2.UploadAsyncRequest(header=header)
            sent = 0
            async for chunk in _chunks(source):
                yield async_jobs_pb2.UploadAsyncRequest(chunk=chunk)
                sent += len(chunk)
                if progress is not None:
                    progress(sent, total)

        call = self._inference.UploadAsync(
            requests(),
            timeout=self._deadline(timeout, long=True),
            metadata=await self._metadata(),
        )
        # sagewire may end the call while chunks are still going out (an over-size upload is
        # refused at once): recover its status, not grpc.aio's local INTERNAL.
        status = CallStatus(call)
        try:
            answer = await call
        except grpc.RpcError as exc:
            raise await status.server_error(exc, _UPLOAD_LOCAL_ONLY) from None
        return Job.of(answer.job, answer.input_size)

    async def get(self, job_id: str, *, timeout: Timeout = DEFAULT) -> JobResult:
        """A job's state, with its output inlined when small enough."""
        request = async_jobs_pb2.GetAsyncResultRequest(job_id=job_id, view=BODY_ONLY)
        try:
            answer = await self._inference.GetAsyncResult(
                request, timeout=self._deadline(timeout), metadata=await self._metadata()
            )
        except grpc.RpcError as exc:
            raise errors.from_rpc_error(exc) from None
        return JobResult.of(answer)

    async def watch(self, job_id: str, *, timeout: Timeout = DEFAULT) -> AsyncIterator[JobEvent]:
        """The states a job enters, ending after a terminal one."""
        call = self._inference.WatchAsync(
            async_jobs_pb2.WatchAsyncRequest(job_id=job_id),
            timeout=self._deadline(timeout, long=True),
            metadata=await self._metadata(),
        )
        try:
            async for event in call:
                yield JobEvent(
                    JobState.of(event.state), _time(event.observed_at), event.failure_reason
                )
        except grpc.RpcError as exc:
            raise errors.from_rpc_error(exc) from None
        finally:
            call.cancel()

    async def wait(self, job_id: str, *, timeout: Timeout = DEFAULT) -> JobResult:
        """Waits until the job is COMPLETED, FAILED or EXPIRED; returns its result."""
        async for event in self.watch(job_id, timeout=timeout):
            if event.state.terminal:
                break
        return await self.get(job_id)

    async def read_output(
        self,
        job_id: str,
        *,
        to: str | Path | None = None,
        progress: Progress | None = None,
        timeout: Timeout = DEFAULT,
    ) -> bytes | int:
        """A completed job's output of any size: the bytes, or (with `to=`) the number of
        bytes written to that file. The file appears only once complete (`<to>.part` first)."""
        call = self._inference.ReadAsyncOutput(
            async_jobs_pb2.ReadAsyncOutputRequest(job_id=job_id),
            timeout=self._deadline(timeout, long=True),
            metadata=await self._metadata(),
        )
        target = Path(to) if to is not None else None
        partial = target.with_name(target.name + ".part") if target else None
        parts: list[bytes] = []
        done, total = 0, None
        try:
            sink_context = open(partial, "wb") if partial else nullcontext()  # noqa: ASYNC230, SIM115
            with sink_context as sink:
                async for message in call:
                    total = total or message.total_size or None
                    if sink is None:
                        parts.append(message.chunk)
                    else:
                        sink.write(message.chunk)
                    done += len(message.chunk)
                    if progress is not None:
                        progress(done, total)
        except grpc.RpcError as exc:
            if partial:
                partial.unlink(missing_ok=True)
            raise errors.from_rpc_error(exc) from None
        finally:
            call.cancel()
        if target is None or partial is None:
            return b"".join(parts)
        partial.replace(target)
        return done

    # -- models ---------------------------------------------------------------------------

    async def models(self, *, timeout: Timeout = DEFAULT) -> list[ModelInfo]:
        """Every model (route) this caller may use, sorted by name."""
        try:
            answer = await self._models.ListModels(
                model_service_pb2.ListModelsRequest(),
                timeout=self._deadline(timeout),
                metadata=await self._metadata(),
            )
        except grpc.RpcError as exc:
            raise errors.from_rpc_error(exc) from None
        return [ModelInfo.of(model) for model in answer.models]

    async def model(self, name: str, *, timeout: Timeout = DEFAULT) -> ModelInfo:
        """One model, with its endpoint's status."""
        try:
            answer = await self._models.GetModel(
                model_service_pb2.GetModelRequest(name=name),
                timeout=self._deadline(timeout),
                metadata=await self._metadata(),
            )
        except grpc.RpcError as exc:
            raise errors.from_rpc_error(exc) from None
        return ModelInfo.of(answer.model)


def _size_of(source: UploadSource) -> int | None:
    if isinstance(source, bytes):
        return len(source)
    if isinstance(source, str | Path):
        return Path(source).stat().st_size
    return None


async def _chunks(source: UploadSource) -> AsyncIterator[bytes]:
    if isinstance(source, bytes):
        for start in range(0, len(source), UPLOAD_CHUNK_BYTES):
            yield source[start : start + UPLOAD_CHUNK_BYTES]
    elif isinstance(source, str | Path):
        with open(source, "rb") as file:  # noqa: ASYNC230 (local disk, one chunk at a time)
            while chunk := file.read(UPLOAD_CHUNK_BYTES):
                yield chunk
    elif isinstance(source, AsyncIterable):
        async for chunk in source:
            yield chunk
    else:
        for chunk in source:
            yield chunk
