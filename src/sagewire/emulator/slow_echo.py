"""The ``slow-echo`` demo model: the input back, unchanged, after a delay.

Why: async inference needs a model whose work visibly takes time and can be made to fail on
demand, per request, without reconfiguring the endpoint. Per-request controls travel in the
custom attributes (``X-Amzn-SageMaker-Custom-Attributes``), which SageMaker forwards to the
container as they are: ``;``-separated ``key=value`` pairs.

- ``delay_ms=<n>``: wait n ms instead of the default (about one second). A delay longer than
  the request's InvocationTimeoutSeconds makes the invocation time out.
- ``fail=<text>``: answer like a container returning HTTP 500 with body ``<text>``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from sagewire.emulator.model_api import DEFAULT_CONTENT_TYPE, ModelFailure, ModelReply, ModelRequest

DEFAULT_DELAY_S = 1.0
MAX_DELAY_MS = 3_600_000


def parse_attributes(text: str | None) -> dict[str, str]:
    """``a=1; b=two`` → {"a": "1", "b": "two"}; pieces without ``=`` are ignored."""
    pairs = (piece.split("=", 1) for piece in (text or "").split(";") if "=" in piece)
    return {key.strip(): value.strip() for key, value in pairs}


async def _once(body: bytes) -> AsyncGenerator[bytes, None]:
    yield body


class SlowEchoModel:
    def __init__(self, delay_s: float = DEFAULT_DELAY_S) -> None:
        self.delay_s = delay_s

    async def invoke(self, request: ModelRequest) -> ModelReply:
        attributes = parse_attributes(request.custom_attributes)
        delay = self.delay_s
        if "delay_ms" in attributes:
            raw = attributes["delay_ms"]
            if not raw.isdigit() or int(raw) > MAX_DELAY_MS:
                raise ModelFailure(400, f"delay_ms must be an integer 0..{MAX_DELAY_MS}")
            delay = int(raw) / 1000
        await asyncio.sleep(delay)
        if "fail" in attributes:
            raise ModelFailure(500, attributes["fail"] or "failure requested by the caller")
        return ModelReply(
            chunks=_once(request.body),
            content_type=request.content_type or DEFAULT_CONTENT_TYPE,
            custom_attributes=request.custom_attributes,
        )
