"""sagewire.aws.sigv4 signs exactly as botocore.auth.SigV4Auth: the same headers, canonical
request and signature for the same request and signing time (botocore signs first; its
X-Amz-Date is the time handed to sagewire's signer). The wire-level check is
tests/integration/test_lean_conformance.py."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials

from sagewire.aws.sigv4 import Signer, canonical_uri, payload_hash

HOST = "runtime.sagemaker.eu-west-1.amazonaws.com"
URL = f"https://{HOST}/endpoints/my-endpoint/invocations"


@dataclass
class _Request:
    """What SigV4Auth reads and writes (the lean path's former signing request)."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    context: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)


def _botocore(
    headers: dict[str, str], url: str, body: bytes, credentials: ReadOnlyCredentials
) -> tuple[dict[str, str], str]:
    request = _Request("POST", url, dict(headers), body)
    auth = SigV4Auth(credentials, "sagemaker", "eu-west-1")
    auth.add_auth(request)
    return request.headers, auth.canonical_request(request)


CASES: dict[str, tuple[dict[str, str], str, bytes]] = {
    "plain": (
        {
            "Content-Type": "application/json",
            "User-Agent": "sagewire/1 Botocore/1.0",
            "host": HOST,
        },
        URL,
        b'{"inputs": [1, 2, 3]}',
    ),
    "empty body": ({"User-Agent": "x", "host": HOST}, URL, b""),
    "every option": (
        {
            "Content-Type": "text/csv",
            "Accept": "application/json",
            "X-Amzn-SageMaker-Custom-Attributes": "  a=1,   b = two\t",
            "X-Amzn-SageMaker-Target-Model": "model.tar.gz",
            "X-Amzn-SageMaker-Target-Variant": "AllTraffic",
            "X-Amzn-SageMaker-Target-Container-Hostname": "c1",
            "X-Amzn-SageMaker-Inference-Id": "id-1",
            "X-Amzn-SageMaker-Enable-Explanations": "`true`",
            "X-Amzn-SageMaker-Inference-Component": "ic",
            "X-Amzn-SageMaker-Session-Id": "NEW_SESSION",
            "User-Agent": "sagewire/1",
            "host": HOST,
        },
        URL,
        bytes(range(256)) * 8,
    ),
    "unicode attribute": (
        {"X-Amzn-SageMaker-Custom-Attributes": "naïve\u00a0 ü", "host": HOST},
        URL,
        b"x",
    ),
    "encoded endpoint name": (
        {"host": "127.0.0.1:8080"},
        "http://127.0.0.1:8080/endpoints/a%20b%2Fc.~d/invocations-response-stream",
        b"{}",
    ),
    "dot segments and a path prefix": (
        {"host": "127.0.0.1:8080", "Accept": "*/*"},
        "http://127.0.0.1:8080/prefix//./endpoints/e/invocations",
        b"{}",
    ),
    "stale signature headers": (
        {
            "host": HOST,
            "Authorization": "old",
            "X-Amz-Date": "20000101T000000Z",
            "X-Amz-Security-Token": "old",
        },
        URL,
        b"{}",
    ),
    "blacklisted headers": (
        {"host": HOST, "Expect": "100-continue", "X-Amzn-Trace-Id": "Root=1", "User-Agent": "u"},
        URL,
        b"{}",
    ),
}


@pytest.mark.parametrize("hashed", [False, True], ids=["body", "body_hash"])
@pytest.mark.parametrize("token", [None, "", "FwoGZXIvYXdzEJr//session+token="])
@pytest.mark.parametrize("case", list(CASES))
def test_headers_equal_botocores(case: str, token: str | None, hashed: bool) -> None:
    """`hashed`: the body's hash handed in, as the lean path does for every attempt."""
    headers, url, body = CASES[case]
    credentials = ReadOnlyCredentials(
        "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token
    )
    expected, canonical = _botocore(headers, url, body, credentials)
    ours = dict(headers)
    Signer("sagemaker", "eu-west-1").sign(
        ours,
        url,
        body,
        "AKIDEXAMPLE",
        credentials.secret_key,
        token,
        timestamp=expected["X-Amz-Date"],
        body_hash=payload_hash(body) if hashed else None,
    )
    assert list(ours.items()) == list(expected.items())
    assert canonical_uri(url) == canonical.split("\n")[1]


def test_one_signer_signing_call_after_call_signs_each_as_botocore() -> None:
    """The canonical requests a Signer keeps never stand in for another request's: the cases
    in turn with an inference ID changing, more header sets than are kept, then the first ones
    again, with tokens and bodies changing (botocore signs first; its time is handed over)."""
    signer = Signer("sagemaker", "eu-west-1")
    calls = [
        ({**headers, "X-Amzn-SageMaker-Inference-Id": f"id-{n}"}, url, token, body)
        for n in range(5)
        for headers, url, _ in CASES.values()
        for token, body in ((None, b"{}"), ("session", b"[1]"))
    ]
    assert len(calls) > 64
    for headers, url, token, body in calls + calls[:20]:
        credentials = ReadOnlyCredentials("AKIDEXAMPLE", "secret", token)
        expected, _ = _botocore(headers, url, body, credentials)
        ours = dict(headers)
        signer.sign(
            ours, url, body, "AKIDEXAMPLE", "secret", token, timestamp=expected["X-Amz-Date"]
        )
        assert list(ours.items()) == list(expected.items())
    assert len(signer._canonical) <= 64  # bounded: the oldest went


@pytest.mark.parametrize("body", [b"", b"{}", b"\x00\xff" * 700])
def test_the_payload_hash_is_sigv4auths(body: bytes) -> None:
    credentials = ReadOnlyCredentials("AKID", "secret", None)
    request = AWSRequest("POST", URL, headers={"host": HOST}, data=body)
    assert payload_hash(body) == SigV4Auth(credentials, "sagemaker", "eu-west-1").payload(request)


def test_the_signing_key_follows_the_day_and_the_secret() -> None:
    """The cached key is per (secret, day): a new day or a rotated secret signs as botocore."""
    signer = Signer("sagemaker", "eu-west-1")
    headers = {"host": HOST, "Content-Type": "application/json"}
    for secret, stamp in [
        ("s1", "20261130T235959Z"),
        ("s1", "20261201T000000Z"),
        ("s2", "20261201T000001Z"),
        ("s1", "20261201T000002Z"),
    ]:
        credentials = ReadOnlyCredentials("AKID", secret, None)
        request = AWSRequest("POST", URL, headers=headers, data=b"{}")
        request.context["timestamp"] = stamp
        auth = SigV4Auth(credentials, "sagemaker", "eu-west-1")
        ours = {**headers, "X-Amz-Date": stamp}
        request.headers["X-Amz-Date"] = stamp
        expected = auth.signature(
            auth.string_to_sign(request, auth.canonical_request(request)), request
        )
        signer.sign(ours, URL, b"{}", "AKID", secret, None, timestamp=stamp)
        assert ours["Authorization"].endswith(f"Signature={expected}")


def test_the_timestamp_is_sigv4s_utc_second() -> None:
    before = int(time.time())
    stamp = Signer("sagemaker", "eu-west-1").timestamp()
    after = int(time.time())
    signed = datetime.strptime(stamp, SIGV4_TIMESTAMP).replace(tzinfo=UTC).timestamp()
    assert before <= signed <= after
