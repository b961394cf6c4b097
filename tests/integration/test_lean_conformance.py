"""The lean client's requests are botocore's: the same calls made through sagewire with
aws.client = "lean" and with "aioboto3" reach the emulator as the same HTTP requests (method,
path and query, every header in order), with the same canonical request under SigV4, and both
signatures verify against the configured credentials (the emulator's SigV4 check, which
recomputes them with botocore's signer). A wrong secret is refused the same way on both.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from sagewire.emulator.faults import Fault
from sagewire.emulator.server import RunningEmulator, running_emulator
from sagewire.emulator.sigv4 import Received
from sagewire.v1 import common_pb2, invoke_pb2
from support import AWS_CLIENTS, TEST_EMULATOR_CONFIG, Sagewire, failure, start_sagewire

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
_AMZ_DATE = re.compile(r"^\d{8}T\d{6}Z$")

type Call = Callable[[Sagewire], Awaitable[Any]]


async def _invoke(sw: Sagewire) -> Any:
    return await sw.inference.Invoke(
        invoke_pb2.InvokeRequest(
            model="echo",
            body=b'{"x": "\xc3\xa9"}',
            content_type="application/json",
            accept="application/json",
            options=common_pb2.InvocationOptions(
                target_variant="B", inference_id="req-1", custom_attributes="a=1; b=2"
            ),
        )
    )


async def _invoke_empty(sw: Sagewire) -> Any:
    return await sw.inference.Invoke(invoke_pb2.InvokeRequest(model="echo-strict", body=b""))


async def _stream(sw: Sagewire) -> Any:
    request = invoke_pb2.InvokeStreamRequest(model="tokens", body=b'{"text": "one two three"}')
    return [part async for part in sw.inference.InvokeStream(request)]


async def _missing(sw: Sagewire) -> Any:
    with pytest.raises(grpc.aio.AioRpcError):
        await sw.inference.Invoke(invoke_pb2.InvokeRequest(model="missing", body=b"x"))


def _comparable(received: Received) -> tuple[str, str, list[tuple[str, str]]]:
    """The request with what must differ between two sends taken out: the signing time, the
    signature, and the invocation id (checked for shape here). Headers by name: with awscrt
    installed botocore signs with CrtSigV4Auth, which adds X-Amz-Security-Token before
    X-Amz-Date, the lean path with botocore.auth.SigV4Auth (after); HTTP gives the order of
    different headers no meaning, and the canonical request (compared too) sorts them."""
    headers: list[tuple[str, str]] = []
    for name, value in received.headers:
        lower = name.lower()
        kept = value
        if lower == "x-amz-date":
            assert _AMZ_DATE.match(value), value
            kept = "<date>"
        elif lower == "authorization":
            kept = re.sub(r"/\d{8}/", "/<day>/", value.rsplit(", Signature=", 1)[0])
        elif lower == "amz-sdk-invocation-id":
            assert _UUID.match(value), value
            kept = "<uuid>"
        elif lower == "amz-sdk-request":
            kept = re.sub(r"ttl=\d{8}T\d{6}Z; ", "ttl=<t>; ", value)
        headers.append((name, kept))
    return received.method, received.path, sorted(headers, key=lambda h: h[0].lower())


def _canonical(received: Received) -> str:
    assert received.canonical_request, "the emulator did not verify this request"
    return re.sub(
        r"\nx-amz-date:\d{8}T\d{6}Z\n", "\nx-amz-date:<date>\n", received.canonical_request
    )


async def _requests(
    emulator: RunningEmulator, client: str, call: Call, **aws: Any
) -> list[Received]:
    assert emulator.sigv4 is not None
    async with start_sagewire(emulator, aws={"client": client, **aws}) as sw:
        emulator.sigv4.received.clear()
        await call(sw)
    return [r for r in emulator.sigv4.received if r.path.startswith("/endpoints/")]


@pytest.mark.parametrize(
    "call", [_invoke, _invoke_empty, _stream, _missing], ids=["options", "empty", "stream", "error"]
)
async def test_lean_requests_equal_botocores(emulator: RunningEmulator, call: Call) -> None:
    lean, botocore = [await _requests(emulator, client, call) for client in AWS_CLIENTS]
    assert len(lean) == len(botocore) == 1
    assert _comparable(lean[0]) == _comparable(botocore[0])
    assert _canonical(lean[0]) == _canonical(botocore[0])


async def test_resends_carry_botocores_attempt_headers(emulator: RunningEmulator) -> None:
    """A throttled first attempt is sent again by both clients with the same amz-sdk-request
    (attempt=2; max=3, and the ttl botocore derives from the answer's Date)."""
    sent: dict[str, list[Received]] = {}
    for client in AWS_CLIENTS:
        emulator.reset()
        emulator.set_fault("faulty", Fault(error="throttling", error_first_calls=1))
        faulty = invoke_pb2.InvokeRequest(model="faulty", body=b"{}")

        async def call(sw: Sagewire, request: invoke_pb2.InvokeRequest = faulty) -> Any:
            return await sw.inference.Invoke(request)

        sent[client] = await _requests(emulator, client, call, max_attempts=3)
    lean, botocore = sent["lean"], sent["aioboto3"]
    assert len(lean) == len(botocore) == 2
    for mine, theirs in zip(lean, botocore, strict=True):
        assert _comparable(mine) == _comparable(theirs)
        assert _canonical(mine) == _canonical(theirs)
    retry = {n.lower(): v for n, v in lean[1].headers}["amz-sdk-request"]
    assert retry.endswith("attempt=2; max=3"), retry


@pytest.mark.parametrize("client", AWS_CLIENTS)
async def test_a_wrong_signature_is_refused_loudly(client: str) -> None:
    """Signed with a secret the emulator does not hold: 403 InvalidSignatureException from
    SageMaker, PERMISSION_DENIED / AWS_ACCESS_DENIED from sagewire, on both clients."""
    async with running_emulator(
        TEST_EMULATOR_CONFIG, verify_sigv4={"test": "not-the-secret"}
    ) as emu:
        async with start_sagewire(emu, aws={"client": client}) as sw:
            for call in (_invoke, _stream):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call(sw)
                f = failure(caught.value)
                assert f.code is grpc.StatusCode.PERMISSION_DENIED
                assert f.reason == "AWS_ACCESS_DENIED"
                assert "InvalidSignatureException" in f.message
        assert emu.stats("echo").invocations == 0


async def test_session_tokens_are_sent_and_signed_alike(
    emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Temporary credentials (a session token from the provider chain) travel as botocore
    sends them: X-Amz-Security-Token, signed."""
    monkeypatch.setenv("AWS_SESSION_TOKEN", "a-session-token")
    lean, botocore = [await _requests(emulator, client, _invoke) for client in AWS_CLIENTS]
    assert _comparable(lean[0]) == _comparable(botocore[0])
    assert _canonical(lean[0]) == _canonical(botocore[0])
    assert "x-amz-security-token:a-session-token" in _canonical(lean[0])
