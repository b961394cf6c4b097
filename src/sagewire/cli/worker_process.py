"""One worker process of `serve --workers N` (sagewire.cli.workers spawns it): serves until
SIGTERM/SIGINT or until its parent is gone; a stop while it is still starting cancels the start."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from multiprocessing.connection import Connection

from sagewire.cli.startup import run
from sagewire.config import ConfigError, Settings
from sagewire.observability import logs
from sagewire.transports.grpc.server import SagewireServer

log = logging.getLogger("sagewire.workers")


def worker_main(settings: Settings, pipe: Connection) -> None:
    """A worker's entry point (spawned): serve until SIGTERM/SIGINT or the parent's end of
    `pipe` closes; send ("ready", pid) on `pipe` once listening."""
    logs.configure(settings.server.log_level, settings.server.log_format, pid=True)
    try:
        run(_worker(settings, pipe))
    finally:
        logs.flush()  # multiprocessing ends a child with os._exit: no logging.shutdown


async def _worker(settings: Settings, pipe: Connection) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    this = asyncio.current_task()
    ready = False

    def stopping() -> None:
        stop.set()
        if not ready and this is not None:
            this.cancel()  # still starting (e.g. a hung credential process): do not wait for it

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping)

    def orphaned() -> None:  # the parent never writes: readable means it is gone
        loop.remove_reader(pipe.fileno())
        stopping()

    loop.add_reader(pipe.fileno(), orphaned)
    try:
        async with SagewireServer(settings, worker=True):
            ready = True
            pipe.send(("ready", os.getpid()))
            await stop.wait()
            log.info("worker stopping")
    except asyncio.CancelledError:
        if not stop.is_set():
            raise
        log.info("worker stopped during start-up")
    except ConfigError as exc:  # found only at start-up (e.g. aws.ca_bundle): as `serve` does
        print(f"sagewire: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
    except OSError as exc:
        print(f"sagewire: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    finally:
        loop.remove_reader(pipe.fileno())
