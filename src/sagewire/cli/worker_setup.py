"""What the parent of `serve --workers N` prepares before it spawns a worker
(sagewire.cli.workers): every shared port bound once and made concrete, and an operator's
PROMETHEUS_MULTIPROC_DIR emptied of an earlier run."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

from sagewire.config import ConfigError, Settings
from sagewire.transports.listen import ListenError, split_listen

log = logging.getLogger("sagewire.workers")


def reserve(listen: str) -> tuple[str, list[socket.socket]]:
    """Bind `listen` (host:port) with SO_REUSEPORT without listening; return the address with
    its concrete port (port 0 picks one) and the sockets, to hold while workers join the port.
    A bound socket that does not listen takes no connections."""
    host, port = split_listen(listen)
    held: list[socket.socket] = []
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            held.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((address[0], port, *address[2:]))
            port = sock.getsockname()[1]
    except OSError as exc:
        for sock in held:
            sock.close()
        reason = (exc.strerror or str(exc)).lower()
        raise ListenError(f"cannot listen on {listen}: {reason}") from None
    return f"{listen.rpartition(':')[0]}:{port}", held


def with_ports(settings: Settings, held: list[socket.socket]) -> Settings:
    """`settings` with every shared listener's port reserved and made concrete."""
    server, rest = settings.server, settings.rest
    grpc_listen, sockets = reserve(server.listen)
    held += sockets
    maintenance = server.maintenance_listen
    if maintenance is not None:
        maintenance, sockets = reserve(maintenance)
        held += sockets
    rest_listen = rest.listen
    if rest_listen:
        rest_listen, sockets = reserve(rest_listen)
        held += sockets
    return settings.model_copy(
        update={
            "server": server.model_copy(
                update={"listen": grpc_listen, "maintenance_listen": maintenance}
            ),
            "rest": rest.model_copy(update={"listen": rest_listen}),
        }
    )


def empty_metrics_dir(path: str) -> None:
    """Delete the value files (*.db) an earlier run left in PROMETHEUS_MULTIPROC_DIR `path`.

    prometheus-client sums every file there, a dead process's counters included, so "this
    directory must be wiped between process/Gunicorn runs (before startup is recommended)"
    (prometheus-client's multiprocess documentation). The parent owns the directory for the
    whole run and no worker runs yet. Other files are left alone. ConfigError: not a directory.
    """
    directory = Path(path)
    if not directory.is_dir():
        raise ConfigError(
            "the environment", [f"PROMETHEUS_MULTIPROC_DIR {path!r} is not a directory"]
        )
    stale = list(directory.glob("*.db"))
    for file in stale:
        file.unlink(missing_ok=True)
    if stale:
        log.info(
            "PROMETHEUS_MULTIPROC_DIR %s: removed %d files of an earlier run", path, len(stale)
        )
