"""Shared by the async inference tests: buckets, the emulator endpoints and the sagewire routes
and settings they use (fixtures in tests/integration/conftest.py)."""

from __future__ import annotations

from typing import Any

from sagewire.emulator.config import EmulatorConfig, EndpointConfig

STAGING_BUCKET = "sagewire-staging"
INPUTS_BUCKET = "caller-inputs"
SHARED_PREFIX = f"s3://{INPUTS_BUCKET}/shared/"
# Where the emulator puts async results by default (its AsyncInferenceConfig).
OUTPUT_PREFIX = "s3://sagewire-emulator/async-output/"
FAILURE_PREFIX = "s3://sagewire-emulator/async-failures/"
RESULTS = {"output_prefix": OUTPUT_PREFIX, "failure_prefix": FAILURE_PREFIX}

ASYNC_EMULATOR_CONFIG = EmulatorConfig(
    endpoints={
        "slow-echo": EndpointConfig(model="slow-echo"),
        "echo": EndpointConfig(model="echo"),
    }
)

ASYNC_ROUTES: dict[str, dict[str, Any]] = {
    "slow-echo": {
        "endpoint": "slow-echo",
        "mode": "async",
        "allow": [
            "custom_attributes",
            "inference_id",
            "request_ttl_seconds",
            "invocation_timeout_seconds",
        ],
        "async": {
            **RESULTS,
            "allowed_input_prefixes": [SHARED_PREFIX],
            "request_ttl_seconds": 600,
            "invocation_timeout_seconds": 60,
        },
    },
    # No per-call options, no input locations.
    "slow-echo-strict": {"endpoint": "slow-echo", "mode": "async", "async": RESULTS},
    # Answers at once: for large inputs and outputs.
    "echo-async": {
        "endpoint": "echo",
        "mode": "async",
        "content_type": "application/octet-stream",
        "async": RESULTS,
    },
    "echo": {"endpoint": "echo"},
}

# Fast polling and the smallest S3 part, so tests see several parts and prompt state changes.
ASYNC_JOBS: dict[str, Any] = {
    "staging_bucket": STAGING_BUCKET,
    "watch_poll_initial_s": 0.05,
    "watch_poll_max_s": 0.4,
    "upload_part_bytes": 5 * 1024 * 1024,
    "inline_output_bytes": 1024 * 1024,
}


def async_settings(s3_url: str, **async_jobs: Any) -> dict[str, Any]:
    """start_sagewire() arguments for sagewire with the async routes."""
    return {
        "routes": ASYNC_ROUTES,
        "aws": {"s3_endpoint_url": s3_url},
        "async_jobs": {**ASYNC_JOBS, **async_jobs},
    }
