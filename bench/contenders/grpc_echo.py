"""The gRPC ceiling: a bare grpc.aio server with sagewire's Invoke and InvokeStream messages.

Invoke answers with the request body. InvokeStream answers the emulator's demo requests itself:
`{"bytes": N, "part_size": K}` (firehose) as N/K messages of K bytes, `{"text": ...}` (tokens)
as one message per word. Same server options and event loop (uvloop) as sagewire, and nothing
else: no route lookup, no validation, no upstream call. Whatever sagewire costs above this is
sagewire (or its upstream call).

    python -m bench.contenders.grpc_echo --listen 127.0.0.1:0 [--upstream EMULATOR_URL]

With `--upstream`, Invoke instead forwards the body to the emulator's `echo` endpoint and
answers with its reply, over the same keep-alive HTTP/1.1 pool sagewire's lean path uses
(sagewire.aws.lean_http1, unsigned): the least a Python grpc.aio gateway in front of an HTTP
model does per call, the floor under sagewire's added latency (`python -m bench.grpc_floor`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc
import uvloop

from sagewire.aws.lean_http1 import Http1Pool
from sagewire.v1 import inference_service_pb2_grpc, invoke_pb2

MAX_MESSAGE = 8 * 1024 * 1024


class EchoServicer(inference_service_pb2_grpc.InferenceServiceServicer):
    def __init__(self, upstream: Http1Pool | None = None, url: str = "") -> None:
        self._upstream = upstream
        self._url = url
        self._host = url.split("://", 1)[-1].split("/", 1)[0]

    async def Invoke(
        self, request: invoke_pb2.InvokeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> invoke_pb2.InvokeResponse:
        if self._upstream is not None:
            headers = {
                "host": self._host,
                "Content-Type": request.content_type or "application/json",
                "Content-Length": str(len(request.body)),
            }
            reply = await self._upstream.post(self._url, headers, request.body)
            return invoke_pb2.InvokeResponse(
                body=await reply.read(),
                content_type=reply.headers.get("Content-Type", ""),
                invoked_production_variant="AllTraffic",
            )
        return invoke_pb2.InvokeResponse(
            body=request.body,
            content_type=request.content_type,
            invoked_production_variant="AllTraffic",
        )

    async def InvokeStream(
        self,
        request: invoke_pb2.InvokeStreamRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[invoke_pb2.InvokeStreamResponse]:
        doc = json.loads(request.body)
        if "bytes" in doc:
            size = int(doc.get("part_size", 16384))
            part = b"x" * (size - 1) + b"\n"
            pieces = [part] * (int(doc["bytes"]) // size)
        else:
            pieces = [f'{{"token": "{w}"}}\n'.encode() for w in doc["text"].split()]
        for index, piece in enumerate(pieces):
            yield invoke_pb2.InvokeStreamResponse(body=piece, index=index)


async def serve(listen: str, upstream: str = "") -> None:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.so_reuseport", 0),
        ]
    )
    session = Http1Pool(upstream, 1024, 60.0, 60.0, None) if upstream else None
    url = f"{upstream.rstrip('/')}/endpoints/echo/invocations"
    inference_service_pb2_grpc.add_InferenceServiceServicer_to_server(
        EchoServicer(session, url),  # type: ignore[abstract]  # the rest: UNIMPLEMENTED
        server,
    )
    port = server.add_insecure_port(listen)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"grpc echo ready on {listen.rsplit(':', 1)[0]}:{port}", file=sys.stderr, flush=True)
    await stop.wait()
    await server.stop(1)
    if session is not None:
        session.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.contenders.grpc_echo")
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--upstream", default="", help="the emulator's URL: forward Invoke")
    args = parser.parse_args()
    uvloop.run(serve(args.listen, args.upstream))


if __name__ == "__main__":
    main()
