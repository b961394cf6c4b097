"""Job ids: they round-trip, cannot be forged or altered, expire, and survive key rotation."""

from __future__ import annotations

import base64
import json
from dataclasses import replace

import pytest

from sagewire.core.errors import ErrorKind, SagewireError
from sagewire.core.job_ids import MAX_JOB_ID_CHARS, JobIdCodec, JobToken

OLD_KEY = b"o" * 32
NEW_KEY = b"n" * 32
DAY = 86_400
TOKEN = JobToken(
    model="summarise",
    endpoint="summariser-prod",
    inference_id="a1b2",
    output_location="s3://results-bucket/async/out/0f3c.out",
    failure_location="s3://results-bucket/async/failed/0f3c-error.out",
    submitted_at=1_700_000_000,
    expires_at=1_700_021_600,
)
NOW = TOKEN.submitted_at + 60


def _error(codec: JobIdCodec, job_id: str, now: float = NOW) -> SagewireError:
    with pytest.raises(SagewireError) as caught:
        codec.decode(job_id, now)
    return caught.value


def _payload(job_id: str) -> dict[str, object]:
    payload = job_id.split(".")[1]
    doc: dict[str, object] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return doc


def _with_payload(job_id: str, doc: dict[str, object]) -> str:
    prefix, _, tag = job_id.split(".")
    payload = base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()
    return f"{prefix}.{payload}.{tag}"


def test_round_trip_carries_everything_a_replica_needs() -> None:
    codec = JobIdCodec([OLD_KEY], retention_s=DAY)
    job_id = codec.encode(TOKEN)
    assert job_id.startswith("swj1.")
    assert codec.decode(job_id, NOW) == TOKEN
    # URL- and header-safe: base64url pieces joined by dots, nothing else.
    assert set(job_id) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def test_a_replica_with_the_same_key_reads_it() -> None:
    job_id = JobIdCodec([OLD_KEY], retention_s=DAY).encode(TOKEN)
    assert JobIdCodec([OLD_KEY], retention_s=DAY).decode(job_id, NOW) == TOKEN


@pytest.mark.parametrize(
    "field", ["output_location", "failure_location", "endpoint", "model", "expires_at"]
)
def test_altering_any_field_is_detected(field: str) -> None:
    codec = JobIdCodec([OLD_KEY], retention_s=DAY)
    job_id = codec.encode(TOKEN)
    doc = _payload(job_id)
    short = {
        "output_location": "o",
        "failure_location": "f",
        "endpoint": "e",
        "model": "m",
        "expires_at": "x",
    }[field]
    doc[short] = 4_000_000_000 if field == "expires_at" else "s3://someone-else/secret.out"
    error = _error(codec, _with_payload(job_id, doc))
    assert (error.kind, error.reason) == (ErrorKind.INVALID_ARGUMENT, "JOB_ID_INVALID")
    assert "someone-else" not in error.message


def test_a_forged_tag_or_another_deployments_key_is_refused() -> None:
    codec = JobIdCodec([OLD_KEY], retention_s=DAY)
    foreign = JobIdCodec([b"x" * 32], retention_s=DAY).encode(TOKEN)
    assert _error(codec, foreign).reason == "JOB_ID_INVALID"
    job_id = codec.encode(TOKEN)
    flipped = job_id[:-2] + ("A" if job_id[-2] != "A" else "B") + job_id[-1]
    assert _error(codec, flipped).reason == "JOB_ID_INVALID"


@pytest.mark.parametrize(
    "job_id",
    [
        "nope",
        "swj1.only-two",
        "swj1.a.b.c",
        "swj2.e30.AAAA",
        "swj1.e30.!!!!",
        "swj1.e30." + "A" * 10,  # tag of the wrong length
        "swj1." + "A" * MAX_JOB_ID_CHARS + ".AAAA",
    ],
)
def test_malformed_ids_are_invalid_argument(job_id: str) -> None:
    error = _error(JobIdCodec([OLD_KEY], retention_s=DAY), job_id)
    assert (error.kind, error.reason) == (ErrorKind.INVALID_ARGUMENT, "JOB_ID_MALFORMED")
    assert error.violations[0].field == "job_id"


def test_empty_id_names_the_field() -> None:
    error = _error(JobIdCodec([OLD_KEY], retention_s=DAY), "")
    assert error.kind is ErrorKind.INVALID_ARGUMENT
    assert error.message.startswith("job_id: is required")


def test_ids_expire_after_the_deadline_plus_retention() -> None:
    codec = JobIdCodec([OLD_KEY], retention_s=DAY)
    job_id = codec.encode(TOKEN)
    assert codec.decode(job_id, TOKEN.expires_at + DAY) == TOKEN
    error = _error(codec, job_id, now=TOKEN.expires_at + DAY + 1)
    assert (error.kind, error.reason) == (ErrorKind.NOT_FOUND, "JOB_ID_EXPIRED")
    assert "2023-11-16" in error.message  # when it stopped being answered, in UTC


def test_expiry_is_checked_only_after_the_tag() -> None:
    # An expired-looking forgery is still a forgery: nothing about its contents is trusted.
    codec = JobIdCodec([OLD_KEY], retention_s=0)
    job_id = codec.encode(replace(TOKEN, expires_at=0))
    doc = _payload(job_id)
    doc["o"] = "s3://elsewhere/x"
    assert _error(codec, _with_payload(job_id, doc), now=NOW).reason == "JOB_ID_INVALID"


def test_rotation_new_key_signs_old_keys_still_verify() -> None:
    before = JobIdCodec([OLD_KEY], retention_s=DAY)
    during = JobIdCodec([NEW_KEY, OLD_KEY], retention_s=DAY)
    after = JobIdCodec([NEW_KEY], retention_s=DAY)
    old_id = before.encode(TOKEN)
    new_id = during.encode(TOKEN)
    assert during.decode(old_id, NOW) == TOKEN
    assert after.decode(new_id, NOW) == TOKEN
    assert _error(before, new_id).reason == "JOB_ID_INVALID"
    assert _error(after, old_id).reason == "JOB_ID_INVALID"


def test_a_codec_needs_a_key() -> None:
    with pytest.raises(ValueError, match="at least one key"):
        JobIdCodec([], retention_s=DAY)


def test_owner_binding_round_trips_and_is_signed() -> None:
    codec = JobIdCodec([OLD_KEY], retention_s=DAY)
    bound = replace(TOKEN, owner="q3JpZ2h0LW93bmVyLWRpZ2VzdA")
    job_id = codec.encode(bound)
    assert codec.decode(job_id, NOW) == bound
    # Without authentication no binding is written: the id keeps its earlier form.
    assert '"b"' not in base64.urlsafe_b64decode(codec.encode(TOKEN).split(".")[1] + "==").decode()
    # Changing the owner breaks the tag like any other field.
    head, payload, tag = job_id.split(".")
    doc = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    doc["b"] = "someone-else"
    forged = base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()
    with pytest.raises(SagewireError) as caught:
        codec.decode(f"{head}.{forged}.{tag}", NOW)
    assert caught.value.reason == "JOB_ID_INVALID"
