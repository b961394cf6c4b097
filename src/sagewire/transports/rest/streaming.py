"""Server-streaming RPCs over HTTP/1.1: newline-delimited JSON, or Server-Sent Events.

NDJSON (`application/x-ndjson`, the default): one response message per line, as Envoy's
transcoder writes with `stream_newline_delimited`. SSE (`text/event-stream`, when the client's
Accept asks for it): each message is one `data:` event. A failure after the first message
cannot change the HTTP status any more, so the stream ends with one last record carrying the
google.rpc.Status JSON: `{"error": {...}}` as the last NDJSON line, or an `event: error` SSE
event. A stream without that record ended cleanly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sagewire.transports.rest.transcode import dumps

NDJSON = "application/x-ndjson"
SSE = "text/event-stream"


@dataclass(frozen=True)
class StreamFormat:
    content_type: str
    sse: bool

    def message(self, data: Any) -> bytes:
        if self.sse:
            return b"data: " + dumps(data) + b"\n\n"
        return dumps(data) + b"\n"

    def error(self, status: dict[str, Any]) -> bytes:
        if self.sse:
            return b"event: error\ndata: " + dumps(status) + b"\n\n"
        return dumps({"error": status}) + b"\n"


def negotiate(accept: str) -> StreamFormat:
    """SSE when the Accept header names text/event-stream, NDJSON otherwise."""
    wanted = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    if SSE in wanted:
        return StreamFormat(SSE, sse=True)
    return StreamFormat(NDJSON, sse=False)
