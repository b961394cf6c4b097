"""CPU per call of the lean SageMaker path's stages that do no I/O (issue 15).

    python -m bench.lean_stages [--calls 20000]

Builds a SageMakerRuntime (aws.client = "lean", dummy credentials, an endpoint nobody listens
on: nothing is sent) and times, per call, in process CPU time: botocore's parameters
(`_params`), the request dict (`LeanSender.request`, botocore's `prepare_request_dict`), the
signed headers of one attempt (`LeanSender._signed`: credentials, SigV4, amz-sdk-* headers) and
the CLIENT span/metrics wrapper without a tracer. The HTTP part (sagewire.aws.lean_http1, the
event loop) is what `python -m bench.profile --load unary` shows on top.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": "http://127.0.0.1:9",
}


def _per_call_us(fn: Callable[[], Any], calls: int) -> float:
    fn()
    start = time.process_time()
    for _ in range(calls):
        fn()
    return (time.process_time() - start) / calls * 1e6


async def stages(calls: int) -> dict[str, float]:
    from sagewire.aws.lean import INVOKE, invocation_id
    from sagewire.aws.runtime import SageMakerRuntime, _params
    from sagewire.aws.sigv4 import payload_hash
    from sagewire.config.settings import AwsSettings
    from sagewire.core.types import EndpointRequest, InvocationOptions

    request = EndpointRequest(
        "echo", b"x" * 1024, "application/octet-stream", "", InvocationOptions()
    )
    async with SageMakerRuntime(AwsSettings(client="lean")) as runtime:
        sender, observed = runtime._lean, runtime._observed
        assert sender is not None
        assert observed is not None
        params = _params(request)

        def context() -> dict[str, Any]:
            return {"retries": {"attempt": 1, "invocation-id": invocation_id()}}

        def observe() -> None:
            with observed.call(INVOKE, params) as call:
                call.sends = 1

        figures = {
            "parameters": _per_call_us(lambda: _params(request), calls),
            "request dict": _per_call_us(lambda: sender.request(INVOKE, params, context()), calls),
            "CLIENT span + metrics (no tracer)": _per_call_us(observe, calls),
        }
        request_dict = sender.request(INVOKE, params, context())
        await sender._signed(request_dict, payload_hash(request_dict["body"]))
        start = time.process_time()
        for _ in range(calls):  # one attempt: the body's hash is part of it
            await sender._signed(request_dict, payload_hash(request_dict["body"]))
        figures["signed headers (SigV4)"] = (time.process_time() - start) / calls * 1e6
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args()
    os.environ.update(ENV)
    for name, us in asyncio.run(stages(args.calls)).items():
        print(f"{name:36} {us:7.1f} µs per call")


if __name__ == "__main__":
    main()
