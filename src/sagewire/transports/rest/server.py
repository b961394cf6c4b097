"""The REST listener's lifecycle, driven by SagewireServer beside the gRPC server."""

from __future__ import annotations

import logging
import ssl

from aiohttp import web

log = logging.getLogger(__name__)


def split_listen(listen: str) -> tuple[str, int]:
    """`host:port` (IPv6 in brackets) as (host, port)."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


class RestListener:
    """An aiohttp AppRunner on one TCP address. `stop(grace)` stops accepting, lets in-flight
    requests finish for `grace` seconds, then cancels them."""

    def __init__(
        self,
        app: web.Application,
        listen: str,
        ssl_context: ssl.SSLContext | None = None,
        idle_timeout_s: float = 75.0,
        reuse_port: bool = False,
    ) -> None:
        self._app = app
        self._listen = listen
        # TLS (rotating, from server.tls) and how long a connection may sit without a complete
        # request: aiohttp closes a connection idle, or stuck in an unfinished request head, for
        # longer than its keep-alive timeout.
        self._ssl = ssl_context
        self._idle_timeout_s = idle_timeout_s
        # SO_REUSEPORT for the workers of `serve --workers N`, who share the port.
        self._reuse_port = reuse_port
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, grace_s: float) -> int:
        runner = web.AppRunner(
            self._app,
            handler_cancellation=True,  # a client that hangs up cancels its upstream call
            access_log=None,  # the bridge writes its own access lines (no payloads)
            shutdown_timeout=grace_s,
            keepalive_timeout=self._idle_timeout_s,
        )
        await runner.setup()
        host, port = split_listen(self._listen)
        try:
            site = web.TCPSite(
                runner, host, port, reuse_port=self._reuse_port, ssl_context=self._ssl
            )
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]
        log.info("REST bridge serving on %s (port %d)", self._listen, self.port)
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
