"""Front a real model container that speaks the SageMaker container contract.

Why: the same emulator that serves demo models can put a locally running inference container
(``POST /invocations`` on its own port) behind a wire-compatible SageMaker Runtime, so the
gateway can be tried against a real model with no AWS account. Headers are forwarded as
SageMaker does; a non-2xx answer becomes a ``ModelFailure`` (ModelError 424 on the wire) and a
chunked answer is relayed chunk by chunk as it arrives, which is what a streaming endpoint does.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import aiohttp

from sagewire.emulator.model_api import DEFAULT_CONTENT_TYPE, ModelFailure, ModelReply, ModelRequest

CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
_FORWARDED = {
    "Content-Type": "content_type",
    "Accept": "accept",
    CUSTOM_ATTRIBUTES: "custom_attributes",
    "X-Amzn-SageMaker-Target-Model": "target_model",
    "X-Amzn-SageMaker-Session-Id": "session_id",
}
MAX_ORIGINAL_MESSAGE = 1024


class ContainerModel:
    """Forwards each invocation to ``{url}/invocations`` over ``session``.

    ``timeout_s`` bounds the wait for the container's response headers (SageMaker allows 60 s)
    and, on the stream path, each gap between chunks.
    """

    def __init__(self, url: str, session: aiohttp.ClientSession, timeout_s: float = 60.0) -> None:
        self.url = url.rstrip("/") + "/invocations"
        self.session = session
        self.timeout_s = timeout_s

    async def invoke(self, request: ModelRequest) -> ModelReply:
        headers = {
            name: value
            for name, attr in _FORWARDED.items()
            if (value := getattr(request, attr)) is not None
        }
        # Like a bare POST from SageMaker: no Content-Type invented when the caller sent none.
        skip = set() if "Content-Type" in headers else {"Content-Type"}
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=self.timeout_s)
        try:
            response = await self.session.post(
                self.url,
                data=request.body,
                headers=headers,
                skip_auto_headers=skip,
                timeout=timeout,
            )
        except TimeoutError:
            raise ModelFailure(None, "container did not respond in time", timed_out=True) from None
        except aiohttp.ClientError as exc:
            raise ModelFailure(None, f"could not reach the model container: {exc}") from None
        if not 200 <= response.status < 300:
            async with response:
                text = await _read_text(response)
            raise ModelFailure(response.status, text)
        return ModelReply(
            chunks=_relay(response),
            content_type=response.headers.get("Content-Type", DEFAULT_CONTENT_TYPE),
            custom_attributes=response.headers.get(CUSTOM_ATTRIBUTES),
            # A stateful container opens and closes sessions with these answer headers.
            new_session_id=response.headers.get("X-Amzn-SageMaker-New-Session-Id"),
            closed_session_id=response.headers.get("X-Amzn-SageMaker-Closed-Session-Id"),
        )


async def _read_text(response: aiohttp.ClientResponse) -> str:
    try:
        raw = await response.content.read(MAX_ORIGINAL_MESSAGE)
    except (aiohttp.ClientError, TimeoutError):
        return ""
    return raw.decode("utf-8", errors="replace")


async def _relay(response: aiohttp.ClientResponse) -> AsyncGenerator[bytes, None]:
    """Yield the container's body as it arrives; always releases the connection."""
    async with response:
        try:
            async for chunk in response.content.iter_any():
                yield chunk
        except TimeoutError:
            raise ModelFailure(None, "container stopped sending", timed_out=True) from None
        except aiohttp.ClientError as exc:
            raise ModelFailure(None, f"container stream broke: {exc}") from None
