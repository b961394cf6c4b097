"""The admin HTTP listener: `GET /metrics` in the Prometheus text format (or OpenMetrics when
the scraper asks for it).

aiohttp on sagewire's own event loop rather than prometheus-client's threaded WSGI server: one
fewer thread, and aiohttp is already a dependency. In multiprocess mode every worker's values
are read from PROMETHEUS_MULTIPROC_DIR, so any process's listener answers for all of them.
"""

from __future__ import annotations

import logging

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

log = logging.getLogger(__name__)


class AdminListener:
    """`async with AdminListener(registry, "127.0.0.1:9464") as admin:`; `admin.port` is the
    bound port (0 in `listen` picks a free one)."""

    def __init__(self, registry: CollectorRegistry, listen: str) -> None:
        self._registry = registry
        host, _, port = listen.rpartition(":")
        self._host = host.strip("[]")
        self._port = int(port)
        self.port = 0
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)

    async def _metrics(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        # Collecting reads every series (and in multiprocess mode, files); it is quick next to
        # a scrape interval, so it runs on the loop.
        body = encoder(self._registry)
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def __aenter__(self) -> AdminListener:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, reuse_address=True)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._port
        log.info("metrics on http://%s:%d/metrics", self._host, self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()
