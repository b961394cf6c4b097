"""Settings of the REST bridge (`[rest]`). Every field is documented in docs/configuration.md;
the bridge itself in docs/rest.md."""

from __future__ import annotations

from pydantic import Field, field_validator

from sagewire.config.base import Strict

LISTEN_PATTERN = r"^(\[[0-9a-fA-F:.]+\]|[^:\s]+):\d{1,5}$"


class RestSettings(Strict):
    """The HTTP/JSON listener beside the gRPC one. Off unless `listen` is set."""

    # host:port of the REST listener; empty: no REST listener.
    listen: str = Field(default="", pattern=rf"^$|{LISTEN_PATTERN}")
    # Largest request body the bridge reads (413 past it). A JSON body carries `body` bytes as
    # base64 (4/3 of their size), so the default fits SageMaker's 6 MB limit with room.
    max_request_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)

    @field_validator("listen")
    @classmethod
    def _port_in_range(cls, value: str) -> str:
        if value and int(value.rsplit(":", 1)[1]) > 65535:
            raise ValueError("port must be 0..65535 (0 picks a free port)")
        return value
