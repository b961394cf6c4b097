"""Every SageMaker failure the emulator can inject reaches the caller as a specific status."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from sagewire.emulator.faults import Fault
from sagewire.emulator.server import RunningEmulator
from sagewire.v1 import common_pb2, invoke_pb2
from support import BOTH_AWS_CLIENTS, Sagewire, failure, start_sagewire

pytestmark = BOTH_AWS_CLIENTS

CASES: list[tuple[str, dict[str, Any], grpc.StatusCode, str, bool]] = [
    # (id, fault, code, reason, retry advice expected)
    (
        "model-4xx",
        {"error": "model_error", "original_status": 400, "original_message": "bad tensor"},
        grpc.StatusCode.INVALID_ARGUMENT,
        "MODEL_ERROR",
        False,
    ),
    (
        "model-5xx",
        {"error": "model_error", "original_status": 500, "original_message": "oom"},
        grpc.StatusCode.INTERNAL,
        "MODEL_ERROR",
        False,
    ),
    (
        "model-503",
        {"error": "model_error", "original_status": 503, "original_message": "busy"},
        grpc.StatusCode.UNAVAILABLE,
        "MODEL_ERROR",
        True,
    ),
    (
        "model-timeout",
        {"error": "model_timeout", "timeout_after_ms": 10},
        grpc.StatusCode.DEADLINE_EXCEEDED,
        "MODEL_TIMEOUT",
        False,
    ),
    (
        "not-ready",
        {"error": "model_not_ready"},
        grpc.StatusCode.UNAVAILABLE,
        "MODEL_NOT_READY",
        True,
    ),
    (
        "service-unavailable",
        {"error": "service_unavailable"},
        grpc.StatusCode.UNAVAILABLE,
        "SAGEMAKER_UNAVAILABLE",
        True,
    ),
    (
        "internal-failure",
        {"error": "internal_failure"},
        grpc.StatusCode.INTERNAL,
        "SAGEMAKER_INTERNAL_FAILURE",
        False,
    ),
    (
        "internal-dependency",
        {"error": "internal_dependency"},
        grpc.StatusCode.UNAVAILABLE,
        "SAGEMAKER_DEPENDENCY_FAILURE",
        True,
    ),
    (
        "throttling",
        {"error": "throttling"},
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "THROTTLED",
        True,
    ),
    (
        "validation",
        {"error": "validation", "message": "1 validation error detected: Value at 'x'"},
        grpc.StatusCode.INVALID_ARGUMENT,
        "SAGEMAKER_VALIDATION",
        False,
    ),
]


@pytest.mark.parametrize(
    ("fault", "code", "reason", "retry"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_upstream_error_mapping(
    sagewire: Sagewire,
    emulator: RunningEmulator,
    fault: dict[str, Any],
    code: grpc.StatusCode,
    reason: str,
    retry: bool,
) -> None:
    emulator.set_fault("faulty", Fault(**fault))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sagewire.inference.Invoke(invoke_pb2.InvokeRequest(model="faulty", body=b"{}"))
    f = failure(caught.value)
    assert (f.code, f.reason) == (code, reason)
    assert "faulty" in f.message  # names the endpoint
    assert (f.detail(error_details_pb2.RetryInfo) is not None) is retry
    assert "Traceback" not in f.message


async def test_model_error_keeps_the_models_own_answer(
    sagewire: Sagewire, emulator: RunningEmulator
) -> None:
    emulator.set_fault(
        "faulty",
        Fault(error="model_error", original_status=422, original_message='{"error":"no"}'),
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sagewire.inference.Invoke(invoke_pb2.InvokeRequest(model="faulty", body=b"{}"))
    f = failure(caught.value)
    detail = f.detail(common_pb2.ModelErrorDetail)
    assert detail.original_status_code == 422
    assert detail.original_message == '{"error":"no"}'
    assert detail.log_stream_arn.startswith("arn:aws:logs:")
    assert '{"error":"no"}' in f.message


async def test_runtime_unreachable_is_unavailable(emulator: RunningEmulator) -> None:
    # A port nothing listens on: connection refused, reported as retryable UNAVAILABLE.
    async with start_sagewire("http://127.0.0.1:9") as sw:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await sw.inference.Invoke(invoke_pb2.InvokeRequest(model="echo", body=b"{}"))
    f = failure(caught.value)
    assert (f.code, f.reason) == (grpc.StatusCode.UNAVAILABLE, "RUNTIME_UNREACHABLE")
    assert f.detail(error_details_pb2.RetryInfo) is not None


async def test_missing_credentials_is_reported_not_unknown(
    emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    async with start_sagewire(emulator.url) as sw:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await sw.inference.Invoke(invoke_pb2.InvokeRequest(model="echo", body=b"{}"))
    f = failure(caught.value)
    assert (f.code, f.reason) == (grpc.StatusCode.INTERNAL, "AWS_CREDENTIALS_MISSING")
    assert "credential" in f.message
    assert emulator.stats("echo").invocations == 0


# -- text of any length keeps its status (issue 10, class 2) ------------------------------------
# The test channel keeps gRPC's default metadata limit (8 KiB): trailers past it would reach the
# caller as RESOURCE_EXHAUSTED "received metadata size exceeds hard limit", the status lost.


async def test_a_9000_character_sagemaker_message_keeps_its_status(
    sagewire: Sagewire, emulator: RunningEmulator
) -> None:
    emulator.set_fault("faulty", Fault(error="validation", message="Value at 'x' " + "v" * 9000))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sagewire.inference.Invoke(invoke_pb2.InvokeRequest(model="faulty", body=b"{}"))
    f = failure(caught.value)
    assert (f.code, f.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "SAGEMAKER_VALIDATION")
    assert f.message.startswith("SageMaker rejected the request to endpoint 'faulty': Value at")
    assert f.message.endswith("…")
    assert len(f.message) <= 1024


async def test_a_long_non_ascii_mid_stream_error_keeps_its_status_after_the_data(
    sagewire: Sagewire, emulator: RunningEmulator
) -> None:
    # 3,000 CJK characters: 9,000 bytes of UTF-8, 27,000 once percent-encoded.
    emulator.set_fault(
        "faulty-stream",
        Fault(stream_error_after_parts=2, stream_error_code="StreamBroken", message="模型" * 1500),
    )
    received: list[bytes] = []
    call = sagewire.inference.InvokeStream(
        invoke_pb2.InvokeStreamRequest(
            model="faulty-stream",
            body=b'{"text": "a b c d e f g h"}',
            content_type="application/json",
        )
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _collect(call, received)
    f = failure(caught.value)
    assert (f.code, f.reason) == (grpc.StatusCode.UNAVAILABLE, "MODEL_STREAM_BROKEN")
    assert f.detail(error_details_pb2.RetryInfo) is not None
    assert "模型模型" in f.message
    assert received  # the parts before the error were relayed first


async def test_an_unknown_model_name_of_any_length_keeps_its_status(sagewire: Sagewire) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sagewire.inference.Invoke(invoke_pb2.InvokeRequest(model="ü" * 20_000, body=b"{}"))
    f = failure(caught.value)
    assert (f.code, f.reason) == (grpc.StatusCode.NOT_FOUND, "UNKNOWN_MODEL")


async def _collect(call: Any, into: list[bytes]) -> None:
    async for message in call:
        into.append(message.body)
