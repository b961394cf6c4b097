"""Checking, before anything starts, that every configured listener address can be bound.

Why: gRPC's C core reports a taken port as a bare RuntimeError (after printing its own log line),
and a listener that fails after others started leaves them half up. Binding each address once
up front (as the listener will: SO_REUSEADDR, no SO_REUSEPORT) turns "address already in use"
into one `ListenError` naming the address, before the AWS clients, the gRPC server or the REST
bridge exist. A port taken in the instant between the check and the real bind still fails, with
the listener's own error.
"""

from __future__ import annotations

import socket


class ListenError(OSError):
    """A configured listener address cannot be bound; the message names it and why."""


def split_listen(listen: str) -> tuple[str, int]:
    """`host:port` (IPv6 in brackets) as (host, port)."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def check_listen(listen: str, what: str) -> None:
    """Raise ListenError unless `listen` (host:port) can be bound now; port 0 always can."""
    host, port = split_listen(listen)
    if port == 0:
        return
    try:
        addresses = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on {listen} ({what}): {exc.strerror}") from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                reason = (exc.strerror or str(exc)).lower()
                raise ListenError(f"cannot listen on {listen} ({what}): {reason}") from None
