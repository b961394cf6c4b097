"""What `sagewire serve` says at start-up: the line naming each listener, and warnings about a
configuration that starts but cannot serve a call. Shared by the single process and the parent
of `serve --workers N` (sagewire.cli.workers)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from sagewire.config import Settings

log = logging.getLogger("sagewire")


@dataclass(frozen=True)
class Ports:
    """The bound port of each listener; 0 for a listener that is not configured."""

    grpc: int
    rest: int = 0
    metrics: int = 0
    maintenance: int = 0


def listening_lines(settings: Settings, ports: Ports) -> list[str]:
    """The start-up lines naming each listener's address (tests and operators read them); the
    last one is `sagewire ready on HOST:PORT`."""

    def host(listen: str | None) -> str:
        return (listen or "").rsplit(":", 1)[0]

    lines = []
    if ports.rest:
        scheme = "https" if settings.server.tls is not None else "http"
        lines.append(
            f"sagewire REST bridge on {scheme}://{host(settings.rest.listen)}:{ports.rest}"
        )
    if ports.metrics:
        metrics = host(settings.telemetry.metrics_listen)
        lines.append(f"metrics on http://{metrics}:{ports.metrics}/metrics")
    if ports.maintenance:
        health = host(settings.server.maintenance_listen)
        lines.append(f"health (plaintext) on {health}:{ports.maintenance}")
    lines.append(f"sagewire ready on {host(settings.server.listen)}:{ports.grpc}")
    return lines


async def warn_if_unusable(settings: Settings) -> None:
    """Warn about a configuration that starts (health still says SERVING) but cannot serve a
    call: no routes, or no AWS credentials in the standard chain."""
    if not settings.routes:
        log.warning(
            "no routes are configured: every call answers NOT_FOUND; add [routes.<name>] "
            "(docs/configuration.md)"
        )
    from aiobotocore.session import get_session

    try:
        async with asyncio.timeout(15):
            credentials = await get_session().get_credentials()
    except Exception as error:  # only a warning is at stake
        log.debug("could not look up AWS credentials: %s", error)
        return
    if credentials is None:
        log.warning(
            "no AWS credentials found (environment, shared config and credentials files, SSO, "
            "container or instance role): every call to SageMaker will fail until some are "
            "available"
        )


def run[T](coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on uvloop's event loop (asyncio's where uvloop is missing); its result."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        return asyncio.run(coro)
    return uvloop.run(coro)
