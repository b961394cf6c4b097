"""A signed job id is trusted no further than the configuration allows (issue 10, class 11).

Every id here is signed with the deployment's real key, as anyone holding it could: odd
contents are JOB_ID_MALFORMED (never INTERNAL), re-encodings of a valid id are refused, and an
id naming a model, endpoint or S3 location the configuration does not serve reads nothing: not
the object (GetAsyncResult, ReadAsyncOutput, WatchAsync, REST), not its first bytes through the
failure reason. grpc.aio and aiohttp clients → sagewire → moto's S3 over loopback.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import aiohttp
import grpc
import pytest
from async_support import FAILURE_PREFIX, INPUTS_BUCKET, OUTPUT_PREFIX, async_settings

from sagewire.config.async_jobs import decode_key
from sagewire.core.job_ids import JobIdCodec, JobToken
from sagewire.emulator.server import RunningEmulator
from sagewire.v1 import async_jobs_pb2 as pb
from support import TEST_JOB_ID_KEY, Sagewire, failure, start_sagewire

KEY = decode_key(TEST_JOB_ID_KEY)
CODEC = JobIdCodec([KEY], retention_s=7 * 86_400)
SECRET = b"another tenant's private document: do not show"
SECRET_KEY = "private/tenant-b/input.json"
SECRET_URI = f"s3://{INPUTS_BUCKET}/{SECRET_KEY}"
MALFORMED = (grpc.StatusCode.INVALID_ARGUMENT, "JOB_ID_MALFORMED")
NOT_SERVED = (grpc.StatusCode.FAILED_PRECONDITION, "JOB_NOT_SERVED")


def _token(**overrides: Any) -> JobToken:
    now = int(time.time())
    fields: dict[str, Any] = {
        "model": "slow-echo",
        "endpoint": "slow-echo",
        "inference_id": "crafted",
        "output_location": f"{OUTPUT_PREFIX}crafted.out",
        "failure_location": f"{FAILURE_PREFIX}crafted-error.out",
        "submitted_at": now,
        "expires_at": now + 3600,
        **overrides,
    }
    return JobToken(**fields)


def _signed(doc: object) -> str:
    """An id whose payload is `doc` as given (any JSON), signed with the real key the way
    docs/async.md describes: HMAC-SHA256 over "swj1." + payload."""
    payload = base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()
    tag = hmac.new(KEY, f"swj1.{payload}".encode(), hashlib.sha256).digest()
    return f"swj1.{payload}.{base64.urlsafe_b64encode(tag).rstrip(b'=').decode()}"


def _doc(**overrides: Any) -> dict[str, Any]:
    token = _token()
    doc = {
        "m": token.model,
        "e": token.endpoint,
        "i": token.inference_id,
        "o": token.output_location,
        "f": token.failure_location,
        "s": token.submitted_at,
        "x": token.expires_at,
    }
    return {**doc, **overrides}


async def _outcomes(sw: Sagewire, job_id: str) -> list[tuple[grpc.StatusCode, str, str]]:
    """(code, reason, message) of GetAsyncResult, WatchAsync and ReadAsyncOutput for `job_id`;
    fails the test if any of them succeeds."""

    async def watch() -> None:
        call = sw.inference.WatchAsync(pb.WatchAsyncRequest(job_id=job_id), timeout=10)
        async for _ in call:
            pass

    async def read() -> None:
        call = sw.inference.ReadAsyncOutput(pb.ReadAsyncOutputRequest(job_id=job_id), timeout=10)
        async for _ in call:
            pass

    async def get() -> None:
        await sw.inference.GetAsyncResult(pb.GetAsyncResultRequest(job_id=job_id), timeout=10)

    found = []
    for call in (get, watch, read):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call()
        f = failure(caught.value)
        found.append((f.code, f.reason, f.message))
    return found


async def _assert_refused(sw: Sagewire, job_id: str, expected: tuple[Any, str]) -> None:
    for code, reason, message in await _outcomes(sw, job_id):
        assert (code, reason) == expected, job_id
        assert "s3://" not in message


@pytest.fixture
async def secret(s3: Any) -> str:
    """A private object the service can read but no job of this configuration may name."""
    await s3.put_object(Bucket=INPUTS_BUCKET, Key=SECRET_KEY, Body=SECRET)
    return SECRET_URI


# -- canonical ids, every field checked -----------------------------------------------------------


async def test_non_ascii_ids_are_malformed_not_internal(async_sagewire: Sagewire) -> None:
    valid = CODEC.encode(_token())
    prefix, payload, tag = valid.split(".")
    for job_id in (
        "swj1.é.x",
        f"{prefix}.{payload}é.{tag}",
        f"{prefix}.{payload}.{tag[:-1]}é",
        f"swj1\u00b7{payload}.{tag}",
        "ジョブ",
    ):
        await _assert_refused(async_sagewire, job_id, MALFORMED)


@pytest.mark.parametrize(
    "overrides",
    [
        {"o": ""},
        {"o": "https://example.com/x.out"},
        {"o": "s3://"},
        {"o": "s3:///no-bucket"},
        {"f": "file:///etc/passwd"},
        {"o": f"{OUTPUT_PREFIX}../../private/tenant-b/input.json"},
        {"o": f"{OUTPUT_PREFIX}./x.out"},
        {"x": 10**20},
        {"s": -1},
        {"x": True},
        {"x": 1.5e9},
        {"i": ""},
        {"i": "x" * 65},
        {"m": ""},
        {"m": "no spaces allowed"},
        {"e": "bad_endpoint!"},
        {"m": None},
        {"extra": "field"},
    ],
    ids=lambda overrides: ",".join(f"{k}={str(v)[:24]}" for k, v in overrides.items()),
)
async def test_signed_ids_with_odd_contents_are_malformed(
    async_sagewire: Sagewire, overrides: dict[str, Any]
) -> None:
    await _assert_refused(async_sagewire, _signed(_doc(**overrides)), MALFORMED)


async def test_a_signed_payload_that_is_not_an_object_is_malformed(
    async_sagewire: Sagewire,
) -> None:
    for doc in ([1, 2], "text", 7):
        await _assert_refused(async_sagewire, _signed(doc), MALFORMED)


def _with_tag_chars() -> str:
    """A valid id whose tag has a `-` or `_`, so the standard alphabet spells it differently."""
    for n in range(200):
        job_id = CODEC.encode(_token(inference_id=f"id-{n}"))
        if {"-", "_"} & set(job_id.split(".")[2]):
            return job_id
    raise AssertionError("no tag with - or _ in 200 tries")


async def test_only_the_canonical_spelling_of_an_id_is_accepted(async_sagewire: Sagewire) -> None:
    valid = _with_tag_chars()
    prefix, payload, tag = valid.split(".")
    # The canonical id itself is accepted (a pending job: nothing at its locations yet).
    result = await async_sagewire.inference.GetAsyncResult(pb.GetAsyncResultRequest(job_id=valid))
    assert result.state == pb.ASYNC_STATE_PENDING
    # 32 bytes are 43 base64 characters; the last carries 2 unused bits.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(tag[-1])
    same_bytes = alphabet[last ^ 1]
    assert base64.urlsafe_b64decode(tag[:-1] + same_bytes + "=") == base64.urlsafe_b64decode(
        tag + "="
    )
    standard = tag.replace("-", "+").replace("_", "/")
    payload_padded = payload + "=" * (-len(payload) % 4)
    variants = [
        f"{prefix}.{payload}.{tag}=",
        f"{prefix}.{payload}.{standard}",
        f"{prefix}.{payload}.{tag[:-1]}{same_bytes}",
        f"{prefix}.{payload_padded}.{tag}" if payload_padded != payload else f"{valid}==",
        f"{prefix}.{payload.replace('-', '+').replace('_', '/')}.{tag}"
        if {"-", "_"} & set(payload)
        else f"{prefix}.{payload}+.{tag}",
    ]
    for job_id in variants:
        assert job_id != valid
        await _assert_refused(async_sagewire, job_id, MALFORMED)


# -- checked against the configuration ---------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"model": "no-such-route"},
        {"model": "echo"},  # a configured route, but not of mode async
        {"endpoint": "echo"},  # the route's endpoint is slow-echo
        {"output_location": "s3://sagewire-emulator/async-output-other/x.out"},  # a sibling
        {"output_location": f"{FAILURE_PREFIX}x.out"},
        {"failure_location": f"{OUTPUT_PREFIX}x-error.out"},
        {"failure_location": f"s3://{INPUTS_BUCKET}/shared/x-error.out"},
    ],
    ids=lambda overrides: ",".join(f"{k}={v}" for k, v in overrides.items()),
)
async def test_ids_naming_what_the_configuration_does_not_serve_are_refused(
    async_sagewire: Sagewire, overrides: dict[str, str]
) -> None:
    await _assert_refused(async_sagewire, CODEC.encode(_token(**overrides)), NOT_SERVED)


async def test_a_signed_id_cannot_read_another_object(
    async_sagewire: Sagewire, secret: str
) -> None:
    # The control: the object exists and the service can read it.
    for job_id in (
        CODEC.encode(_token(output_location=secret)),
        CODEC.encode(_token(output_location=f"s3://{INPUTS_BUCKET}/{SECRET_KEY}")),
    ):
        for code, reason, message in await _outcomes(async_sagewire, job_id):
            assert (code, reason) == NOT_SERVED
            assert SECRET.decode() not in message


async def test_a_signed_id_cannot_read_another_object_through_the_failure_reason(
    async_sagewire: Sagewire, secret: str
) -> None:
    job_id = CODEC.encode(_token(failure_location=secret))
    for code, reason, message in await _outcomes(async_sagewire, job_id):
        assert (code, reason) == NOT_SERVED
        assert "tenant" not in message


async def test_the_rest_bridge_applies_the_same_checks(
    async_sagewire: Sagewire, secret: str
) -> None:
    base = async_sagewire.rest_url
    cases = {
        CODEC.encode(_token(output_location=secret)): (400, "JOB_NOT_SERVED"),
        CODEC.encode(_token(failure_location=secret)): (400, "JOB_NOT_SERVED"),
        _signed(_doc(x=10**20)): (400, "JOB_ID_MALFORMED"),
    }
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
        for job_id, (status, reason) in cases.items():
            for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/output"):
                async with http.get(base + path) as response:
                    text = await response.text()
                    assert response.status == status, (path, text)
                    assert reason in text
                    assert "tenant" not in text


async def test_every_id_sagewire_issues_passes_its_own_checks(async_sagewire: Sagewire) -> None:
    request = pb.SubmitAsyncRequest(
        model="slow-echo", body=b"{}", options=pb.AsyncOptions(custom_attributes="fail=boom")
    )
    job = (await async_sagewire.inference.SubmitAsync(request)).job
    call = async_sagewire.inference.WatchAsync(pb.WatchAsyncRequest(job_id=job.job_id), timeout=20)
    states = [message.state async for message in call]
    assert states[-1] == pb.ASYNC_STATE_FAILED


async def test_results_outside_the_routes_prefixes_get_no_id(
    async_emulator: RunningEmulator, s3_url: str
) -> None:
    settings = async_settings(s3_url)
    routes = dict(settings["routes"])
    routes["slow-echo"] = {
        **routes["slow-echo"],
        "async": {**routes["slow-echo"]["async"], "output_prefix": "s3://elsewhere/out/"},
    }
    async with start_sagewire(async_emulator.url, **{**settings, "routes": routes}) as sw:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await sw.inference.SubmitAsync(pb.SubmitAsyncRequest(model="slow-echo", body=b"{}"))
    f = failure(caught.value)
    assert (f.code, f.reason) == (grpc.StatusCode.INTERNAL, "RESULT_LOCATION_NOT_CONFIGURED")
    assert "async.output_prefix" in f.message
