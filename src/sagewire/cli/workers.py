"""`sagewire serve --workers N`: N worker processes sharing the listeners' ports, and the parent
that supervises them (docs/deploy.md, "Workers").

Why processes: one Python process runs its calls on one event loop, on one core. The workers
are spawned (multiprocessing's "spawn": a fresh interpreter, no inherited event loop or gRPC
state) and bind the same ports with SO_REUSEPORT, so the kernel spreads new connections over
them, as grpc's multiprocessing example does: the parent binds each port first (port 0 becomes
one concrete port) and holds it, never listening, so every worker joins the same port.

The parent serves no calls. It
- checks every listener address before anything starts (a taken port: one line, exit 1);
- serves the one /metrics listener: the workers keep their values in PROMETHEUS_MULTIPROC_DIR
  (a private directory unless the operator set one: then its *.db files of an earlier run are
  deleted first) and the parent sums them; each worker's live gauges are dropped
  (`mark_process_dead`) when it exits;
- forwards SIGTERM and SIGINT to every worker at once, so they drain together: health and
  /readyz flip to NOT_SERVING on all, `server.drain_delay_s` later all refuse new calls, and
  in-flight calls finish within `server.shutdown_grace_s`; the parent exits 0 when every worker
  did. A signal during start-up does not wait for the start: workers still starting cancel it
  and exit (a worker that does not is killed EXIT_MARGIN_S later);
- bounds the start: a worker not ready within `server.worker_start_timeout_s` (a hung
  credential process or metadata service, say) stops them all, exit 1, with one ERROR line
  naming it; a restarted worker that hangs so is killed and counted as a death;
- restarts a worker that dies unexpectedly (an OOM kill takes one process, not the container),
  after a backoff of 1 s doubling to 30 s, so the other workers' calls and connections carry
  on. A fault that persists is not hidden: a worker that fails before it is ready the first
  time (exit 2 for a configuration error, as one process would, else 1), or more than
  MAX_DEATHS unexpected deaths within DEATH_WINDOW_S, drain the others and exit non-zero, for
  Kubernetes (or systemd) to restart the whole process and count it.
A worker whose parent dies (SIGKILL) sees its pipe close and drains itself.

The worker's side is sagewire.cli.worker_process; the ports and the metrics directory prepared
before any worker spawns, sagewire.cli.worker_setup.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from sagewire.cli.startup import Ports, listening_lines, run, warn_if_unusable
from sagewire.cli.worker_process import worker_main
from sagewire.cli.worker_setup import empty_metrics_dir, with_ports
from sagewire.config import Settings
from sagewire.observability.admin import AdminListener
from sagewire.transports.grpc.server import check_listeners
from sagewire.transports.listen import split_listen

log = logging.getLogger("sagewire.workers")

MAX_DEATHS = 5
DEATH_WINDOW_S = 60.0
BACKOFF_S = (1.0, 30.0)  # first restart delay, cap (doubling per recent death)
# How long past a worker's own drain (drain_delay_s + shutdown_grace_s) the parent waits for it
# before SIGKILL: closing clients and exporting telemetry take a moment.
EXIT_MARGIN_S = 15.0

_SPAWN = multiprocessing.get_context("spawn")


# -- the parent ---------------------------------------------------------------------------


@dataclass
class _Worker:
    index: int
    process: BaseProcess
    pipe: Connection
    pid: int = 0
    ready: bool = False
    reaped: bool = False


async def _readable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await done
    finally:
        loop.remove_reader(fd)


class Supervisor:
    """The parent of `serve --workers N`. `await Supervisor(settings, n).run()` → exit status."""

    def __init__(self, settings: Settings, count: int) -> None:
        self.settings = settings
        self.count = count
        self.workers: list[_Worker | None] = [None] * count
        self._stop = asyncio.Event()
        self._failed = False
        # The exit status when the start failed; None: a signal ended it (then as any stop).
        self._start_status: int | None = 1
        self._deaths: deque[float] = deque()
        self._metrics_dir = ""

    async def run(self) -> int:
        check_listeners(self.settings)  # ListenError: nothing started yet
        held: list[socket.socket] = []
        try:
            self.settings = with_ports(self.settings, held)
            return await self._run()
        finally:
            for sock in held:
                sock.close()
            if self._metrics_dir:
                shutil.rmtree(self._metrics_dir, ignore_errors=True)

    async def _run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        admin, metrics_port = await self._open_metrics()
        try:
            started = await self._start_all()
            if started:
                self._announce(metrics_port)
                warnings = asyncio.create_task(warn_if_unusable(self.settings))
                keepers = [asyncio.create_task(self._keep(i)) for i in range(self.count)]
                await self._stop.wait()
                log.info("signal received: draining %d workers", self.count)
                for task in (warnings, *keepers):
                    task.cancel()
            clean = await self._stop_all()
        finally:
            if admin is not None:
                await admin.__aexit__(None, None, None)
        if not started and self._start_status is not None:
            return self._start_status
        return 0 if clean and not self._failed else 1

    async def _open_metrics(self) -> tuple[AdminListener | None, int]:
        """The one /metrics listener, summing every worker's values."""
        operators = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if operators:
            empty_metrics_dir(operators)  # before any worker writes to it
        listen = self.settings.telemetry.metrics_listen
        if listen is None:
            return None, 0
        if not operators:
            # Workers read the variable at import time: set before they are spawned.
            self._metrics_dir = tempfile.mkdtemp(prefix="sagewire-metrics-")
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = self._metrics_dir
        from prometheus_client import CollectorRegistry, multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        admin = await AdminListener(registry, listen).__aenter__()
        return admin, admin.port

    def _announce(self, metrics_port: int) -> None:
        settings = self.settings
        ports = Ports(
            split_listen(settings.server.listen)[1],
            split_listen(settings.rest.listen)[1] if settings.rest.listen else 0,
            metrics_port,
            split_listen(settings.server.maintenance_listen)[1]
            if settings.server.maintenance_listen
            else 0,
        )
        pids = ", ".join(str(w.pid) for w in self.workers if w is not None)
        print(f"sagewire workers: {self.count} (pids {pids})", file=sys.stderr, flush=True)
        for line in listening_lines(settings, ports):
            print(line, file=sys.stderr, flush=True)

    def _spawn(self, index: int) -> _Worker:
        ours, theirs = _SPAWN.Pipe()
        process = _SPAWN.Process(
            target=worker_main, args=(self.settings, theirs), name=f"sagewire-worker-{index}"
        )
        process.start()
        theirs.close()
        worker = self.workers[index] = _Worker(index, process, ours, process.pid or 0)
        return worker

    async def _until_ready(self, worker: _Worker) -> bool:
        """Wait for the worker's ready message; False when it exited first."""
        ready = asyncio.create_task(_readable(worker.pipe.fileno()))
        exited = asyncio.create_task(_readable(worker.process.sentinel))
        try:
            await asyncio.wait([ready, exited], return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
            exited.cancel()
        return self._read_ready(worker)

    def _read_ready(self, worker: _Worker) -> bool:
        """Whether `worker` said it is ready (reads its message, if one is waiting)."""
        if worker.ready or worker.reaped:
            return worker.ready
        try:
            message = worker.pipe.recv() if worker.pipe.poll() else None
        except (EOFError, OSError):
            message = None
        worker.ready = isinstance(message, tuple) and message[0] == "ready"
        return worker.ready

    async def _start_all(self) -> bool:
        """Spawn every worker and wait until all are ready. False (with `_start_status`) as soon
        as one exits first, a signal comes, or `server.worker_start_timeout_s` passes."""
        workers = [self._spawn(i) for i in range(self.count)]
        waits: dict[asyncio.Future[Any], _Worker] = {
            asyncio.ensure_future(self._until_ready(w)): w for w in workers
        }
        stop = asyncio.ensure_future(self._stop.wait())
        pending: set[asyncio.Future[Any]] = {*waits, stop}
        failed: list[_Worker] = []
        limit = self.settings.server.worker_start_timeout_s
        try:
            async with asyncio.timeout(limit):
                while pending - {stop} and not failed:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    failed = [waits[t] for t in done if t is not stop and not t.result()]
                    if stop in done:
                        break
        except TimeoutError:
            pass
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if failed:
            for worker in failed:
                worker.process.join()
            # The workers' own exit status: 2 for a configuration error, as `serve` exits.
            self._start_status = 2 if any(w.process.exitcode == 2 for w in failed) else 1
            return False
        if self._stop.is_set():
            log.info("signal received during start-up: stopping the workers")
            self._start_status = None
            return False
        late = [w for w in workers if not self._read_ready(w)]
        for worker in late:
            log.error(
                "worker %d (pid %d) not ready within %gs (server.worker_start_timeout_s): "
                "stopping every worker",
                worker.index,
                worker.pid,
                limit,
            )
        return not late

    async def _keep(self, index: int) -> None:
        """Restart worker `index` whenever it dies while no stop is under way."""
        while True:
            worker = self.workers[index]
            assert worker is not None
            await _readable(worker.process.sentinel)
            worker.process.join()
            self._dead(worker)
            log.error(
                "worker %d (pid %d) exited unexpectedly (exit code %s)",
                index,
                worker.pid,
                worker.process.exitcode,
            )
            now = time.monotonic()
            self._deaths.append(now)
            while self._deaths and self._deaths[0] < now - DEATH_WINDOW_S:
                self._deaths.popleft()
            if len(self._deaths) > MAX_DEATHS:
                log.error(
                    "more than %d worker deaths within %.0fs: draining the rest and exiting",
                    MAX_DEATHS,
                    DEATH_WINDOW_S,
                )
                self._failed = True
                self._stop.set()
                return
            delay = min(BACKOFF_S[0] * 2 ** (len(self._deaths) - 1), BACKOFF_S[1])
            log.warning("restarting worker %d in %.1fs", index, delay)
            await asyncio.sleep(delay)
            restarted = self._spawn(index)
            limit = self.settings.server.worker_start_timeout_s
            try:
                if await asyncio.wait_for(self._until_ready(restarted), limit):
                    log.info("worker %d restarted (pid %d)", index, restarted.pid)
            except TimeoutError:
                log.error(
                    "worker %d (pid %d) not ready within %gs (server.worker_start_timeout_s):"
                    " killed",
                    index,
                    restarted.pid,
                    limit,
                )
                restarted.process.kill()  # the next turn of this loop counts the death

    def _dead(self, worker: _Worker) -> None:
        if worker.reaped:
            return
        worker.reaped = True
        worker.pipe.close()
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]

    async def _stop_all(self) -> bool:
        """SIGTERM to every live worker at once; wait for their drains; True when each exited 0
        (a worker still starting cancels its start; its exit status does not count). A worker
        not yet ready has no calls to drain: it gets EXIT_MARGIN_S, not the drain's bound."""
        for worker in self.workers:
            if worker is not None and worker.process.exitcode is not None:
                self._dead(worker)  # died as the stop began
        live = [w for w in self.workers if w is not None and w.process.exitcode is None]
        for worker in live:
            self._read_ready(worker)  # ready after all (its message unread): it drains
            if worker.process.pid is not None:
                os.kill(worker.process.pid, signal.SIGTERM)
        server = self.settings.server
        drain = server.drain_delay_s + server.shutdown_grace_s + EXIT_MARGIN_S
        limits = {w.pid: drain if w.ready else EXIT_MARGIN_S for w in live}
        late: set[int] = set()

        async def exited(worker: _Worker) -> None:
            try:
                await asyncio.wait_for(_readable(worker.process.sentinel), limits[worker.pid])
            except TimeoutError:
                late.add(worker.pid)

        await asyncio.gather(*(exited(w) for w in live))
        clean = True
        for worker in live:
            # Not `exitcode is None`: the sentinel turns readable a moment before the exited
            # process can be reaped (join() below waits for that moment).
            if worker.pid in late:
                log.error(
                    "worker pid %d did not exit within %.0fs: killed",
                    worker.pid,
                    limits[worker.pid],
                )
                worker.process.kill()
                clean = False
            worker.process.join()
            self._dead(worker)
            if worker.process.exitcode != 0 and worker.ready:
                log.error("worker pid %d exited with %s", worker.pid, worker.process.exitcode)
                clean = False
        return clean


def serve(settings: Settings, count: int) -> int:
    """Run `count` workers until SIGTERM/SIGINT; the process's exit status."""
    return run(Supervisor(settings, count).run())
