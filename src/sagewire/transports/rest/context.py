"""The per-request context a servicer body sees when the REST bridge calls it.

Servicer bodies (transports.grpc) use three things of their grpc.aio context: the deadline
(`time_remaining`), initial metadata (`send_initial_metadata`, sent here as response headers)
and the caller's metadata (`invocation_metadata`, the request headers, for trace context).
`RestContext` offers exactly those, so the REST bridge runs the same bodies the gRPC server
does and nothing about an RPC is written twice.

The deadline comes from the `Grpc-Timeout` request header, grpc-gateway's convention: the
gRPC wire format of a timeout, 1 to 8 digits and a unit (H, M, S, m, u, n), e.g. `1500m`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping

from sagewire.core.errors import invalid_argument

TIMEOUT_HEADER = "Grpc-Timeout"
_TIMEOUT = re.compile(r"^(\d{1,8})([HMSmun])$")
_UNIT_S = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def parse_timeout(value: str) -> float:
    """Seconds of a `Grpc-Timeout` value; INVALID_ARGUMENT naming the header otherwise."""
    match = _TIMEOUT.match(value.strip())
    if match is None:
        raise invalid_argument(
            TIMEOUT_HEADER,
            f"{value!r} is not a gRPC timeout: 1 to 8 digits and a unit H, M, S, m, u or n "
            "(e.g. 1500m)",
        )
    return int(match.group(1)) * _UNIT_S[match.group(2)]


class RestContext:
    """Deadline, headers in and headers out of one REST call."""

    def __init__(self, headers: Iterable[tuple[str, str]], timeout_s: float | None) -> None:
        # Lower-cased when first asked for (few calls do: trace context, gRPC-style security).
        self._raw = headers
        self._headers: tuple[tuple[str, str], ...] | None = None
        self.timeout_s = timeout_s
        self._deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self.initial_metadata: list[tuple[str, str]] = []

    def time_remaining(self) -> float | None:
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())

    async def send_initial_metadata(self, metadata: Iterable[tuple[str, str]]) -> None:
        self.initial_metadata = [(key, str(value)) for key, value in metadata]

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        if self._headers is None:
            self._headers = tuple((key.lower(), value) for key, value in self._raw)
        return self._headers


def timeout_of(headers: Mapping[str, str]) -> float | None:
    """Seconds of the request's `Grpc-Timeout` header, or None when it has none."""
    value = headers.get(TIMEOUT_HEADER)
    return None if value is None else parse_timeout(value)
