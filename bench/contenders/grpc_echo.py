"""The gRPC ceiling: a bare grpc.aio server with sagewire's Invoke and InvokeStream messages.

Invoke answers with the request body. InvokeStream answers the emulator's demo requests itself:
`{"bytes": N, "part_size": K}` (firehose) as N/K messages of K bytes, `{"text": ...}` (tokens)
as one message per word. Same server options and event loop (uvloop) as sagewire, and nothing
else: no route lookup, no validation, no upstream call. Whatever sagewire costs above this is
sagewire (or its upstream call).

    python -m bench.contenders.grpc_echo --listen 127.0.0.1:0
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

from sagewire.v1 import inference_service_pb2_grpc, invoke_pb2

MAX_MESSAGE = 8 * 1024 * 1024


class EchoServicer(inference_service_pb2_grpc.InferenceServiceServicer):
    async def Invoke(
        self, request: invoke_pb2.InvokeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> invoke_pb2.InvokeResponse:
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


async def serve(listen: str) -> None:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.so_reuseport", 0),
        ]
    )
    inference_service_pb2_grpc.add_InferenceServiceServicer_to_server(
        EchoServicer(),  # type: ignore[abstract]  # the rest answer UNIMPLEMENTED at run time
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


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.contenders.grpc_echo")
    parser.add_argument("--listen", default="127.0.0.1:0")
    uvloop.run(serve(parser.parse_args().listen))


if __name__ == "__main__":
    main()
