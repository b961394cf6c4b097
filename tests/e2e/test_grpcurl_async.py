"""docs/async.md's grpcurl walk-through, with the real grpcurl binary against `sagewire local`
(which starts moto's S3 and the emulator): SubmitAsync, then GetAsyncResult and WatchAsync."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from processes import Process, grpcurl, sagewire_process

pytestmark = pytest.mark.e2e

SERVICE = "sagewire.v1.InferenceService"


@pytest.fixture(scope="module")
def local() -> Iterator[Process]:
    with sagewire_process("local", "--config", "config/local.toml") as process:
        yield process


def _call(local: Process, method: str, request: dict[str, Any]) -> list[dict[str, Any]]:
    """Every message grpcurl printed for `method` (one for unary calls)."""
    result = grpcurl("-plaintext", "-d", json.dumps(request), local.target, f"{SERVICE}/{method}")
    assert result.returncode == 0, result.stderr
    decoder, text, at, messages = json.JSONDecoder(), result.stdout, 0, []
    while text[at:].strip():
        while text[at].isspace():
            at += 1
        message, at = decoder.raw_decode(text, at)
        messages.append(message)
    return messages


def test_submit_then_get_the_result(local: Process) -> None:
    (submitted,) = _call(
        local,
        "SubmitAsync",
        {
            "model": "slow-echo",
            "json": {"document": "hello from grpcurl"},
            "options": {"custom_attributes": "delay_ms=2000"},
        },
    )
    job = submitted["job"]
    assert job["model"] == "slow-echo"
    assert job["job_id"].startswith("swj1.")

    # Two seconds of model time: enough for a grpcurl start-up even on a loaded machine.
    (pending,) = _call(local, "GetAsyncResult", {"job_id": job["job_id"]})
    assert pending["state"] == "ASYNC_STATE_PENDING"
    assert pending["expires_at"] == job["expires_at"]

    updates = _call(local, "WatchAsync", {"job_id": job["job_id"]})
    assert updates[-1]["state"] == "ASYNC_STATE_COMPLETED"

    (result,) = _call(local, "GetAsyncResult", {"job_id": job["job_id"]})
    assert result["state"] == "ASYNC_STATE_COMPLETED"
    assert result["json"] == {"document": "hello from grpcurl"}
    assert result["content_type"] == "application/json"


def test_a_failed_job_reports_the_models_reason(local: Process) -> None:
    (submitted,) = _call(
        local,
        "SubmitAsync",
        {
            "model": "slow-echo",
            "body": "eyJ4IjoxfQ==",
            "options": {"custom_attributes": "delay_ms=0;fail=out of tokens"},
        },
    )
    updates = _call(local, "WatchAsync", {"job_id": submitted["job"]["job_id"]})
    assert updates[-1] == {
        "state": "ASYNC_STATE_FAILED",
        "observed_at": updates[-1]["observed_at"],
        "failure_reason": "out of tokens",
    }


def test_a_forged_job_id_is_refused(local: Process) -> None:
    result = grpcurl(
        "-plaintext",
        "-d",
        '{"job_id": "swj1.eyJtIjoieCJ9.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}',
        local.target,
        f"{SERVICE}/GetAsyncResult",
    )
    assert result.returncode != 0
    assert "Code: InvalidArgument" in result.stderr
    assert '"reason":"JOB_ID_INVALID"' in result.stderr
