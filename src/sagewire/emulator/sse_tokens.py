"""The ``sse-tokens`` demo model: a streaming LLM stand-in that speaks Server-Sent Events
(``text/event-stream``), as the TGI, vLLM and LMI containers do.

Why: those containers stream ``data: {...}`` events separated by blank lines, with comments as
keep-alives and vLLM's ``data: [DONE]`` at the end; sagewire's ``sse`` framing must be shown to
cope with all of it, cut at arbitrary PayloadPart boundaries, without a real container.

Request ``{"text": "...", "delay_ms": 0}``. The answer is a comment line (``: sagewire
emulator``), then one event per whitespace-separated word, ``data: {"token": {"id": i, "text":
w}, "generated_text": null}``, then a last event whose JSON spans two ``data:`` lines
(``{"token": null,`` / ``"generated_text": "<the text>"}``), then ``data: [DONE]``. Every
other event ends its lines in CRLF instead of LF (both occur in the wild), and the bytes are
cut into parts whose sizes cycle through ``PART_SIZES``, so events, CRLFs and multi-byte
characters land across parts. ``delay_ms`` sleeps between words; what is buffered goes out first.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncGenerator

from sagewire.emulator.model_api import ModelFailure, ModelReply, ModelRequest

CONTENT_TYPE = "text/event-stream"
PART_SIZES = (5, 17, 2, 40, 1)


def events(text: str) -> list[bytes]:
    """The model's answer to ``text``, one entry per event (comment first, [DONE] last)."""
    out = [b": sagewire emulator\n\n"]
    for index, word in enumerate(text.split()):
        data = json.dumps({"token": {"id": index, "text": word}, "generated_text": None})
        end = b"\r\n" if index % 2 else b"\n"
        out.append(b"data: " + data.encode() + end + end)
    out.append(
        b'data: {"token": null,\n'
        + b'data: "generated_text": '
        + json.dumps(text, ensure_ascii=False).encode()
        + b"}\n\n"
    )
    out.append(b"data: [DONE]\n\n")
    return out


class SseTokensModel:
    """See the module docstring."""

    async def invoke(self, request: ModelRequest) -> ModelReply:
        try:
            doc = json.loads(request.body)
        except ValueError as exc:
            raise ModelFailure(400, f"request body is not JSON: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("text"), str):
            raise ModelFailure(400, 'request must be a JSON object with a string "text"')
        delay_ms = doc.get("delay_ms", 0)
        if not isinstance(delay_ms, int) or isinstance(delay_ms, bool) or delay_ms < 0:
            raise ModelFailure(400, '"delay_ms" must be a non-negative integer')
        return ModelReply(
            chunks=self._generate(events(doc["text"]), delay_ms / 1000),
            content_type=CONTENT_TYPE,
        )

    @staticmethod
    async def _generate(answer: list[bytes], delay: float) -> AsyncGenerator[bytes, None]:
        sizes = itertools.cycle(PART_SIZES)
        size, pending = next(sizes), b""
        for index, event in enumerate(answer):
            if index > 1 and delay:
                if pending:
                    yield pending
                    pending = b""
                await asyncio.sleep(delay)
            pending += event
            while len(pending) >= size:
                yield pending[:size]
                pending, size = pending[size:], next(sizes)
        if pending:
            yield pending
