"""Every SageMaker failure the emulator can inject reaches the caller as a specific status."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from sagewire.emulator.faults import Fault
from sagewire.emulator.server import RunningEmulator
from sagewire.v1 import common_pb2, invoke_pb2
from support import Sagewire, failure, start_sagewire

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
