"""sagewire's Python client: typed calls, one exception hierarchy, gRPC's own retries.

    from sagewire.client import AsyncClient

    async with AsyncClient("127.0.0.1:50051") as client:
        result = await client.invoke("echo", json={"inputs": "hi"})
        print(result.json(), result.variant)

`AsyncClient` (asyncio) and `Client` (blocking) take the same options (`ChannelOptions`) and
raise the same errors (`sagewire.client.errors`). This package imports nothing of the server
(no aioboto3, no emulator): the `sagewire-client` distribution ships it alone (docs/client.md).
"""

from sagewire.client.aio import AsyncClient
from sagewire.client.channel import RETRY_SERVICE_CONFIG, ChannelOptions
from sagewire.client.converse import ConverseSession, Turn
from sagewire.client.errors import (
    Cancelled,
    DeadlineExceeded,
    InvalidArgument,
    ModelError,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
    SagewireError,
    Unauthenticated,
    Unavailable,
)
from sagewire.client.results import (
    Chunk,
    InvokeResult,
    Job,
    JobEvent,
    JobResult,
    JobState,
    ModelInfo,
    StreamPart,
    TurnEnd,
)
from sagewire.client.sync import Client

__all__ = [
    "RETRY_SERVICE_CONFIG",
    "AsyncClient",
    "Cancelled",
    "ChannelOptions",
    "Chunk",
    "Client",
    "ConverseSession",
    "DeadlineExceeded",
    "InvalidArgument",
    "InvokeResult",
    "Job",
    "JobEvent",
    "JobResult",
    "JobState",
    "ModelError",
    "ModelInfo",
    "NotFound",
    "PermissionDenied",
    "QuotaExceeded",
    "SagewireError",
    "StreamPart",
    "Turn",
    "TurnEnd",
    "Unauthenticated",
    "Unavailable",
]
