"""Settings of the REST bridge (`[rest]`). Every field is documented in docs/configuration.md;
the bridge itself in docs/rest.md."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints, field_validator

from sagewire.config.base import Strict

LISTEN_PATTERN = r"^(\[[0-9a-fA-F:.]+\]|[^:\s]+):\d{1,5}$"
# A web origin as browsers send it (RFC 6454): scheme://host[:port], no path, no slash.
ORIGIN_PATTERN = (
    r"^(\*|https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?|https?://\[[0-9a-fA-F:.]+\](:[0-9]{1,5})?)$"
)


class RestSettings(Strict):
    """The HTTP/JSON listener beside the gRPC one. Off unless `listen` is set."""

    # host:port of the REST listener; empty: no REST listener.
    listen: str = Field(default="", pattern=rf"^$|{LISTEN_PATTERN}")
    # Largest request body the bridge reads (413 past it). A JSON body carries `body` bytes as
    # base64 (4/3 of their size), so the default fits SageMaker's 6 MB limit with room.
    max_request_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    # Web origins (`https://tools.example.com`) whose browser pages may call the bridge (CORS);
    # "*" allows any origin. Empty: CORS off, browsers keep cross-origin pages out.
    cors_allow_origins: list[Annotated[str, StringConstraints(pattern=ORIGIN_PATTERN)]] = Field(
        default_factory=list
    )
    # How long a browser may cache a preflight answer (Access-Control-Max-Age).
    cors_max_age_s: int = Field(default=600, ge=0, le=86_400)

    @field_validator("listen")
    @classmethod
    def _port_in_range(cls, value: str) -> str:
        if value and int(value.rsplit(":", 1)[1]) > 65535:
            raise ValueError("port must be 0..65535 (0 picks a free port)")
        return value
