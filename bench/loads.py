"""Named single loads against sagewire, for profiling (bench.profile) and A/B runs (bench.ab)."""

from __future__ import annotations

from typing import Any

from bench.payloads import firehose_request, json_payload, parts_in, tokens_request
from bench.run import make_job

# name → (what, payload bytes or 0, concurrency)
LOADS = {
    "unary": ("Invoke", 1024, 16),
    "unary-1": ("Invoke", 1024, 1),
    "unary-64": ("Invoke", 1024, 64),
    "unary-256k": ("Invoke", 256 * 1024, 16),
    "ttfp": ("InvokeStream tokens", 0, 1),
    "stream": ("InvokeStream firehose 1 MiB in 1 KiB parts", 0, 1),
    "stream-16": ("InvokeStream firehose 1 MiB in 1 KiB parts", 0, 16),
    # The REST bridge (issue 11): the transcoded Invoke and the raw passthrough.
    "rest-64": ("REST :invoke", 1024, 64),
    "rest-raw-64": ("REST /invocations", 1024, 64),
}
STREAM_BYTES = 1024 * 1024
PART_SIZE = 1024


def load_job(
    name: str, target: str, seconds: float, warmup_s: float = 0.5, rest_target: str = ""
) -> dict[str, Any]:
    """A load-generator job running load `name` against sagewire at `target` (gRPC) or
    `rest_target` (the REST bridge's URL)."""
    what, size, concurrency = LOADS[name]
    run = {
        "mode": "closed",
        "concurrency": concurrency,
        "warmup_s": warmup_s,
        "duration_s": seconds,
        "max_calls": 1_000_000,
    }
    if what == "Invoke":
        body = json_payload(size)
        return make_job("grpc", target, "echo", body, [run], expect_bytes=len(body))
    if what.startswith("REST"):
        body = json_payload(size)
        if not rest_target:
            raise ValueError(f"load {name} needs sagewire's REST bridge")
        kind, path = ("rest", "/v1/models/echo:invoke")
        if what.endswith("/invocations"):
            kind, path = ("http", "/v1/models/echo/invocations")
        return make_job(kind, rest_target, path, body, [run], expect_bytes=len(body))
    if "tokens" in what:
        return make_job("grpc-stream", target, "tokens-raw", tokens_request(8), [run])
    return make_job(
        "grpc-stream",
        target,
        "firehose",
        firehose_request(STREAM_BYTES, PART_SIZE),
        [run],
        expect_items=parts_in(STREAM_BYTES, PART_SIZE),
        item_bytes=PART_SIZE,
    )
