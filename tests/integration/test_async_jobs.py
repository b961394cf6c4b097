"""Async inference end to end: grpc.aio client → sagewire → aioboto3 → emulator and moto's S3,
all over loopback with real S3 API calls. "Any replica" is shown with several SagewireServer
instances sharing one configuration (and, in test_async_memory.py, separate processes)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from async_support import (
    FAILURE_PREFIX,
    INPUTS_BUCKET,
    OUTPUT_PREFIX,
    SHARED_PREFIX,
    STAGING_BUCKET,
    async_settings,
)

from sagewire.config.async_jobs import decode_key
from sagewire.core.job_ids import JobIdCodec, JobToken
from sagewire.emulator.server import RunningEmulator
from sagewire.v1 import async_jobs_pb2 as pb
from support import TEST_JOB_ID_KEY, Sagewire, failure, start_sagewire

MiB = 1024 * 1024
PENDING, COMPLETED = pb.ASYNC_STATE_PENDING, pb.ASYNC_STATE_COMPLETED
FAILED, EXPIRED = pb.ASYNC_STATE_FAILED, pb.ASYNC_STATE_EXPIRED
CODEC = JobIdCodec([decode_key(TEST_JOB_ID_KEY)], retention_s=7 * 86_400)


def _submit(model: str = "slow-echo", attributes: str = "", **fields: Any) -> Any:
    options = fields.pop("options", None) or pb.AsyncOptions(custom_attributes=attributes)
    return pb.SubmitAsyncRequest(model=model, options=options, **fields)


async def _watch(sw: Sagewire, job_id: str, deadline_s: float = 30) -> list[pb.WatchAsyncResponse]:
    call = sw.inference.WatchAsync(pb.WatchAsyncRequest(job_id=job_id), timeout=deadline_s)
    return [message async for message in call]


async def _next(call: Any) -> pb.WatchAsyncResponse:
    message = await call.read()
    assert isinstance(message, pb.WatchAsyncResponse), message
    return message


async def _upload(
    sw: Sagewire, model: str, chunks: AsyncIterator[bytes] | list[bytes], **header: Any
) -> pb.UploadAsyncResponse:
    async def requests() -> AsyncIterator[pb.UploadAsyncRequest]:
        yield pb.UploadAsyncRequest(header=pb.UploadAsyncHeader(model=model, **header))
        if isinstance(chunks, list):
            for chunk in chunks:
                yield pb.UploadAsyncRequest(chunk=chunk)
        else:
            async for chunk in chunks:
                yield pb.UploadAsyncRequest(chunk=chunk)

    response: pb.UploadAsyncResponse = await sw.inference.UploadAsync(requests())
    return response


async def _read_output(sw: Sagewire, job_id: str) -> tuple[list[pb.ReadAsyncOutputResponse], bytes]:
    call = sw.inference.ReadAsyncOutput(pb.ReadAsyncOutputRequest(job_id=job_id), timeout=20)
    messages = [message async for message in call]
    return messages, b"".join(m.chunk for m in messages)


def _token(**overrides: Any) -> JobToken:
    now = int(time.time())
    fields: dict[str, Any] = {
        "model": "slow-echo",
        "endpoint": "slow-echo",
        "inference_id": "crafted",
        "output_location": f"{OUTPUT_PREFIX}never/{now}.out",
        "failure_location": f"{FAILURE_PREFIX}never/{now}-error.out",
        "submitted_at": now,
        "expires_at": now + 3600,
        **overrides,
    }
    return JobToken(**fields)


async def _eventually(check: Callable[[], Awaitable[bool]], within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"condition still false after {within_s}s")
        await asyncio.sleep(0.05)


async def _open_uploads(s3: Any) -> list[Any]:
    listed = await s3.list_multipart_uploads(Bucket=STAGING_BUCKET)
    return list(listed.get("Uploads", []))


# -- the happy paths ----------------------------------------------------------------------------


async def test_inline_json_submit_watch_completed(async_sagewire: Sagewire) -> None:
    request = _submit(attributes="delay_ms=200")
    request.json.struct_value.update({"document": "hello", "n": 3})
    submitted = (await async_sagewire.inference.SubmitAsync(request)).job
    assert submitted.model == "slow-echo"
    assert submitted.inference_id
    # The route's defaults: RequestTTLSeconds 600 + InvocationTimeoutSeconds 60.
    assert submitted.expires_at.seconds - submitted.submitted_at.seconds == 660

    updates = await _watch(async_sagewire, submitted.job_id)
    assert [u.state for u in updates] == [PENDING, COMPLETED]
    assert updates[1].observed_at.ToNanoseconds() >= updates[0].observed_at.ToNanoseconds()

    result = await async_sagewire.inference.GetAsyncResult(
        pb.GetAsyncResultRequest(job_id=submitted.job_id)
    )
    assert result.state == COMPLETED
    assert json.loads(result.body) == {"document": "hello", "n": 3}
    assert result.json.struct_value["document"] == "hello"
    assert result.content_type == "application/json"
    assert result.output_size == len(result.body)
    assert not result.output_not_inlined
    assert result.expires_at == submitted.expires_at


async def test_bytes_keep_their_type_and_the_callers_inference_id(
    async_sagewire: Sagewire,
) -> None:
    payload = bytes(range(256)) * 8
    options = pb.AsyncOptions(custom_attributes="delay_ms=0", inference_id="caller-chosen-1")
    job = (
        await async_sagewire.inference.SubmitAsync(
            _submit(body=payload, content_type="application/x-blob", options=options)
        )
    ).job
    assert job.inference_id == "caller-chosen-1"
    assert [u.state for u in await _watch(async_sagewire, job.job_id)][-1] == COMPLETED
    result = await async_sagewire.inference.GetAsyncResult(
        pb.GetAsyncResultRequest(job_id=job.job_id)
    )
    assert result.body == payload
    assert result.content_type == "application/x-blob"
    assert not result.HasField("json")


async def test_existing_input_under_an_allowed_prefix(async_sagewire: Sagewire, s3: Any) -> None:
    await s3.put_object(Bucket=INPUTS_BUCKET, Key="shared/doc.json", Body=b'{"big": "document"}')
    job = (
        await async_sagewire.inference.SubmitAsync(
            _submit(attributes="delay_ms=0", input_location=f"{SHARED_PREFIX}doc.json")
        )
    ).job
    assert [u.state for u in await _watch(async_sagewire, job.job_id)][-1] == COMPLETED
    result = await async_sagewire.inference.GetAsyncResult(
        pb.GetAsyncResultRequest(job_id=job.job_id)
    )
    assert result.json.struct_value["big"] == "document"


async def test_streamed_upload_and_large_output_download(async_sagewire: Sagewire, s3: Any) -> None:
    # 12 MiB: three multipart parts at the 5 MiB part size; the output is too big to inline.
    data = os.urandom(12 * MiB)
    chunks = [data[i : i + 256 * 1024] for i in range(0, len(data), 256 * 1024)]
    uploaded = await _upload(async_sagewire, "echo-async", chunks)
    assert uploaded.input_size == len(data)
    # Staged as it arrived: a multipart object of 5 + 5 + 2 MiB parts.
    listed = await s3.list_objects_v2(
        Bucket=STAGING_BUCKET, Prefix="sagewire/async-inputs/echo-async/"
    )
    (staged,) = [o for o in listed["Contents"] if o["Size"] == len(data)]
    head = await s3.head_object(Bucket=STAGING_BUCKET, Key=staged["Key"], PartNumber=1)
    assert (head["PartsCount"], head["ContentLength"]) == (3, 5 * MiB)
    assert [u.state for u in await _watch(async_sagewire, uploaded.job.job_id)][-1] == COMPLETED

    result = await async_sagewire.inference.GetAsyncResult(
        pb.GetAsyncResultRequest(job_id=uploaded.job.job_id)
    )
    assert result.state == COMPLETED
    assert result.output_not_inlined
    assert result.body == b""
    assert result.output_size == len(data)

    messages, body = await _read_output(async_sagewire, uploaded.job.job_id)
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
    assert messages[0].total_size == len(data)
    assert messages[0].content_type == "application/octet-stream"
    assert max(len(m.chunk) for m in messages) <= 256 * 1024  # read_chunk_bytes default
    assert all(not m.content_type for m in messages[1:])
    assert await _open_uploads(s3) == []


async def test_small_upload_is_one_put(async_sagewire: Sagewire) -> None:
    uploaded = await _upload(
        async_sagewire,
        "slow-echo",
        [b'{"a":', b"1}"],
        content_type="application/json",
        options=pb.AsyncOptions(custom_attributes="delay_ms=0"),
    )
    assert uploaded.input_size == 7
    assert [u.state for u in await _watch(async_sagewire, uploaded.job.job_id)][-1] == COMPLETED
    messages, body = await _read_output(async_sagewire, uploaded.job.job_id)
    assert body == b'{"a":1}'
    assert messages[0].content_type == "application/json"


# -- failures of the job itself -----------------------------------------------------------------


async def test_model_failure_reaches_the_caller_with_its_reason(async_sagewire: Sagewire) -> None:
    job = (
        await async_sagewire.inference.SubmitAsync(
            _submit(attributes="delay_ms=0;fail=tokenizer exploded on page 7", body=b"{}")
        )
    ).job
    updates = await _watch(async_sagewire, job.job_id)
    assert [u.state for u in updates] == [PENDING, FAILED] or [u.state for u in updates] == [FAILED]
    assert updates[-1].failure_reason == "tokenizer exploded on page 7"
    result = await async_sagewire.inference.GetAsyncResult(
        pb.GetAsyncResultRequest(job_id=job.job_id)
    )
    assert result.state == FAILED
    assert result.failure_reason == "tokenizer exploded on page 7"
    assert result.output_size == 0
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _read_output(async_sagewire, job.job_id)
    f = failure(caught.value)
    assert f.code is grpc.StatusCode.FAILED_PRECONDITION
    assert f.reason == "JOB_NOT_COMPLETED"
    assert "failed" in f.message


async def test_invocation_timeout_fails_the_job(async_sagewire: Sagewire) -> None:
    options = pb.AsyncOptions(custom_attributes="delay_ms=5000", invocation_timeout_seconds=1)
    job = (await async_sagewire.inference.SubmitAsync(_submit(body=b"x", options=options))).job
    assert job.expires_at.seconds - job.submitted_at.seconds == 600 + 1
    updates = await _watch(async_sagewire, job.job_id)
    assert updates[-1].state == FAILED
    assert "timed out" in updates[-1].failure_reason


async def test_missing_input_object_fails_the_job(async_sagewire: Sagewire) -> None:
    job = (
        await async_sagewire.inference.SubmitAsync(
            _submit(input_location=f"{SHARED_PREFIX}does-not-exist.json")
        )
    ).job
    updates = await _watch(async_sagewire, job.job_id)
    assert updates[-1].state == FAILED
    assert "NoSuchKey" in updates[-1].failure_reason


async def test_pending_job_has_no_output_yet(async_sagewire: Sagewire) -> None:
    job_id = CODEC.encode(_token())
    result = await async_sagewire.inference.GetAsyncResult(pb.GetAsyncResultRequest(job_id=job_id))
    assert result.state == PENDING
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _read_output(async_sagewire, job_id)
    f = failure(caught.value)
    assert f.code is grpc.StatusCode.FAILED_PRECONDITION
    assert "still pending" in f.message


async def test_past_its_deadline_a_job_is_expired(async_sagewire: Sagewire) -> None:
    now = int(time.time())
    job_id = CODEC.encode(_token(submitted_at=now - 700, expires_at=now - 40))
    result = await async_sagewire.inference.GetAsyncResult(pb.GetAsyncResultRequest(job_id=job_id))
    assert result.state == EXPIRED
    assert result.expires_at.seconds == now - 40
    assert [u.state for u in await _watch(async_sagewire, job_id)] == [EXPIRED]


async def test_watch_reports_expiry_when_the_deadline_passes(async_sagewire: Sagewire) -> None:
    # expires_at has whole seconds: `now + 1` may be only milliseconds ahead, so a loaded
    # machine reached the first poll after the expiry. 3 s ahead leaves the first poll 2 s.
    expires_at = int(time.time()) + 3
    job_id = CODEC.encode(_token(expires_at=expires_at))
    started = time.monotonic()
    # The call's deadline is far off: the watch must end on the expiry, not on its deadline
    # (which would raise DEADLINE_EXCEEDED here).
    updates = await _watch(async_sagewire, job_id, deadline_s=60)
    assert [u.state for u in updates] == [PENDING, EXPIRED]
    assert time.time() >= expires_at  # not reported early
    assert time.monotonic() - started < 30  # the next poll lands just after the expiry


# -- job ids ------------------------------------------------------------------------------------


def _tampered(job_id: str) -> str:
    prefix, payload, tag = job_id.split(".")
    doc = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    doc["o"] = f"s3://{INPUTS_BUCKET}/private/someone-elses-output.out"
    forged = base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()
    return f"{prefix}.{forged}.{tag}"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_bad_job_ids_are_refused_without_touching_s3(
    async_emulator: RunningEmulator,
) -> None:
    # This replica's S3 is a closed port: any S3 call would fail UNAVAILABLE.
    valid = CODEC.encode(_token())
    foreign = JobIdCodec([os.urandom(32)], retention_s=0).encode(_token())
    gone = CODEC.encode(_token(submitted_at=0, expires_at=1000))
    cases = {
        "": ("INVALID_ARGUMENT", grpc.StatusCode.INVALID_ARGUMENT),
        "not-a-job-id": ("JOB_ID_MALFORMED", grpc.StatusCode.INVALID_ARGUMENT),
        valid[:-3]: ("JOB_ID_MALFORMED", grpc.StatusCode.INVALID_ARGUMENT),
        valid.replace("swj1.", "swj9.", 1): ("JOB_ID_MALFORMED", grpc.StatusCode.INVALID_ARGUMENT),
        _tampered(valid): ("JOB_ID_INVALID", grpc.StatusCode.INVALID_ARGUMENT),
        foreign: ("JOB_ID_INVALID", grpc.StatusCode.INVALID_ARGUMENT),
        gone: ("JOB_ID_EXPIRED", grpc.StatusCode.NOT_FOUND),
    }
    dead_s3 = f"http://127.0.0.1:{_closed_port()}"
    async with start_sagewire(async_emulator.url, **async_settings(dead_s3)) as sw:
        for job_id, (reason, code) in cases.items():
            for call in (
                sw.inference.GetAsyncResult(pb.GetAsyncResultRequest(job_id=job_id)),
                _watch(sw, job_id),
                _read_output(sw, job_id),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call
                f = failure(caught.value)
                assert (f.code, f.reason) == (code, reason), job_id
                assert "s3://" not in f.message
        # The control: a valid id does reach S3 (and finds it unreachable).
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await sw.inference.GetAsyncResult(pb.GetAsyncResultRequest(job_id=valid))
        assert failure(caught.value).reason == "S3_UNREACHABLE"
        assert failure(caught.value).code is grpc.StatusCode.UNAVAILABLE


async def test_any_replica_answers_for_any_job(
    async_emulator: RunningEmulator, s3_url: str
) -> None:
    settings = async_settings(s3_url)
    async with start_sagewire(async_emulator.url, **settings) as first:
        request = _submit(attributes="delay_ms=300")
        request.json.struct_value.update({"replica": "first"})
        job = (await first.inference.SubmitAsync(request)).job
    # The replica that took the job is gone; a fresh one, sharing only configuration, answers.
    async with start_sagewire(async_emulator.url, **settings) as second:
        updates = await _watch(second, job.job_id)
        assert updates[-1].state == COMPLETED
        result = await second.inference.GetAsyncResult(pb.GetAsyncResultRequest(job_id=job.job_id))
        assert result.json.struct_value["replica"] == "first"


async def test_rotated_keys_keep_old_ids_valid(
    async_emulator: RunningEmulator, s3_url: str
) -> None:
    new_key = base64.b64encode(os.urandom(32)).decode()
    old_id = CODEC.encode(_token())
    rotated = async_settings(s3_url, job_id_keys=[new_key, TEST_JOB_ID_KEY])
    async with start_sagewire(async_emulator.url, **rotated) as sw:
        result = await sw.inference.GetAsyncResult(pb.GetAsyncResultRequest(job_id=old_id))
        assert result.state == PENDING
        job = (await sw.inference.SubmitAsync(_submit(body=b"{}", attributes="delay_ms=0"))).job
    # Signed with the new key: a replica that has not got it yet refuses the id.
    async with start_sagewire(async_emulator.url, **async_settings(s3_url)) as old:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await old.inference.GetAsyncResult(pb.GetAsyncResultRequest(job_id=job.job_id))
        assert failure(caught.value).reason == "JOB_ID_INVALID"


# -- policy and bad requests --------------------------------------------------------------------


async def test_input_location_outside_the_allowed_prefixes_is_denied(
    async_sagewire: Sagewire,
) -> None:
    for model, location, rule in (
        ("slow-echo", f"s3://{INPUTS_BUCKET}/private/x.json", SHARED_PREFIX),
        ("slow-echo", f"s3://{INPUTS_BUCKET}/shared-not/x.json", SHARED_PREFIX),
        ("slow-echo-strict", f"{SHARED_PREFIX}x.json", "accepts no input_location"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await async_sagewire.inference.SubmitAsync(_submit(model, input_location=location))
        f = failure(caught.value)
        assert f.code is grpc.StatusCode.PERMISSION_DENIED
        assert f.reason == "INPUT_LOCATION_NOT_ALLOWED"
        assert rule in f.message
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await async_sagewire.inference.SubmitAsync(
            _submit(input_location="https://example.com/x.json")
        )
    assert failure(caught.value).code is grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("model", "options", "field", "reason"),
    [
        (
            "slow-echo-strict",
            pb.AsyncOptions(custom_attributes="x"),
            "options.custom_attributes",
            "OPTION_NOT_ALLOWED",
        ),
        (
            "slow-echo-strict",
            pb.AsyncOptions(request_ttl_seconds=120),
            "options.request_ttl_seconds",
            "OPTION_NOT_ALLOWED",
        ),
        (
            "slow-echo",
            pb.AsyncOptions(request_ttl_seconds=30),
            "options.request_ttl_seconds",
            "INVALID_ARGUMENT",
        ),
        (
            "slow-echo",
            pb.AsyncOptions(invocation_timeout_seconds=3601),
            "options.invocation_timeout_seconds",
            "INVALID_ARGUMENT",
        ),
        (
            "slow-echo",
            pb.AsyncOptions(inference_id=" starts-with-space"),
            "options.inference_id",
            "INVALID_ARGUMENT",
        ),
    ],
)
async def test_options_are_checked_before_anything_is_staged(
    async_sagewire: Sagewire, model: str, options: Any, field: str, reason: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await async_sagewire.inference.SubmitAsync(_submit(model, body=b"x", options=options))
    f = failure(caught.value)
    assert f.code is grpc.StatusCode.INVALID_ARGUMENT
    assert f.reason == reason
    assert field in f.message


async def test_wrong_mode_and_missing_input(async_sagewire: Sagewire) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await async_sagewire.inference.SubmitAsync(_submit("echo", body=b"x"))
    assert failure(caught.value).reason == "WRONG_MODE"
    assert failure(caught.value).code is grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await async_sagewire.inference.SubmitAsync(_submit())
    f = failure(caught.value)
    assert f.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "input" in f.message


async def test_upload_messages_must_start_with_one_header(async_sagewire: Sagewire) -> None:
    async def no_header() -> AsyncIterator[pb.UploadAsyncRequest]:
        yield pb.UploadAsyncRequest(chunk=b"x")

    async def two_headers() -> AsyncIterator[pb.UploadAsyncRequest]:
        header = pb.UploadAsyncHeader(model="slow-echo")
        yield pb.UploadAsyncRequest(header=header)
        yield pb.UploadAsyncRequest(chunk=b"x")
        yield pb.UploadAsyncRequest(header=header)

    for requests in (no_header(), two_headers()):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await async_sagewire.inference.UploadAsync(requests)
        f = failure(caught.value)
        assert f.code is grpc.StatusCode.INVALID_ARGUMENT
        assert "header" in f.message


async def test_oversized_upload_is_refused_and_cleaned_up(
    async_emulator: RunningEmulator, s3_url: str, s3: Any
) -> None:
    settings = async_settings(s3_url, max_input_bytes=6 * MiB)
    async with start_sagewire(async_emulator.url, **settings) as sw:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _upload(sw, "echo-async", [b"\0" * MiB] * 8)
    f = failure(caught.value)
    assert f.code is grpc.StatusCode.INVALID_ARGUMENT
    assert f.reason == "PAYLOAD_TOO_LARGE"
    assert str(6 * MiB) in f.message
    assert await _open_uploads(s3) == []


async def test_cancelled_upload_aborts_its_multipart_upload(
    async_sagewire: Sagewire, s3: Any
) -> None:
    never = asyncio.Event()

    async def stalls_after_a_part() -> AsyncIterator[bytes]:
        for _ in range(6):
            yield b"\1" * MiB
        await never.wait()

    task = asyncio.ensure_future(_upload(async_sagewire, "echo-async", stalls_after_a_part()))

    async def started() -> bool:
        return len(await _open_uploads(s3)) == 1

    async def cleaned_up() -> bool:
        return await _open_uploads(s3) == []

    await _eventually(started)
    task.cancel()
    await _eventually(cleaned_up)


async def test_staging_needs_a_bucket(async_emulator: RunningEmulator, s3_url: str) -> None:
    async with start_sagewire(
        async_emulator.url, **async_settings(s3_url, staging_bucket="")
    ) as sw:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await sw.inference.SubmitAsync(_submit(body=b"x"))
        f = failure(caught.value)
        assert f.code is grpc.StatusCode.FAILED_PRECONDITION
        assert f.reason == "STAGING_NOT_CONFIGURED"
        # An existing input needs no staging.
        job = (await sw.inference.SubmitAsync(_submit(input_location=f"{SHARED_PREFIX}absent"))).job
        assert job.job_id


# -- bounds: deadlines, cancellation, stream limit ----------------------------------------------


async def test_watch_honours_the_deadline_and_frees_its_slot(
    async_emulator: RunningEmulator, s3_url: str
) -> None:
    pending = CODEC.encode(_token())
    settings = async_settings(s3_url, max_open_streams=1)
    async with start_sagewire(async_emulator.url, **settings) as sw:
        # Setup first (the channel, the S3 client's first connection), so that the deadline
        # below covers only the watch; 4 s leaves a loaded machine room for its first poll and
        # for the second watcher's refusal, which must come while the first holds the slot.
        await sw.inference.GetAsyncResult(pb.GetAsyncResultRequest(job_id=pending), timeout=30)
        call = sw.inference.WatchAsync(pb.WatchAsyncRequest(job_id=pending), timeout=4.0)
        assert (await _next(call)).state == PENDING
        # The one stream slot is taken: a second watcher is refused with retry advice.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _watch(sw, pending)
        assert failure(caught.value).reason == "STREAM_LIMIT"
        assert failure(caught.value).code is grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _next(call)
        assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED

        async def slot_free() -> bool:
            again = sw.inference.WatchAsync(pb.WatchAsyncRequest(job_id=pending), timeout=10)
            try:
                return (await _next(again)).state == PENDING
            except grpc.aio.AioRpcError:
                return False
            finally:
                again.cancel()

        await _eventually(slot_free, within_s=30)


async def test_a_stalled_upload_is_cut_off(async_emulator: RunningEmulator, s3_url: str) -> None:
    never = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        yield b"first bytes"
        await never.wait()

    settings = async_settings(s3_url, upload_idle_timeout_s=0.2)
    async with start_sagewire(async_emulator.url, **settings) as sw:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _upload(sw, "echo-async", stalls())
    f = failure(caught.value)
    assert (f.code, f.reason) == (grpc.StatusCode.DEADLINE_EXCEEDED, "UPLOAD_IDLE_TIMEOUT")


async def test_a_deployment_without_keys_has_no_async_jobs(
    async_emulator: RunningEmulator, s3_url: str
) -> None:
    routes = {"echo": {"endpoint": "echo"}}
    async with start_sagewire(
        async_emulator.url, routes=routes, async_jobs={"job_id_keys": []}
    ) as sw:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await sw.inference.GetAsyncResult(
                pb.GetAsyncResultRequest(job_id=CODEC.encode(_token()))
            )
    f = failure(caught.value)
    assert (f.code, f.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ASYNC_NOT_CONFIGURED")
