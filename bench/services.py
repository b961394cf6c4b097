"""The processes a benchmark run needs, started on loopback and always cleaned up.

Each server is its own process (so psutil's RSS and CPU numbers are that server's alone):
the SageMaker emulator, sagewire (`sagewire serve`, one process), the FastAPI reference under
uvicorn (one worker) and the bare gRPC echo server. `Services` is an async context manager;
leaving it (normally, on error or on Ctrl-C) sends SIGTERM, waits briefly, then SIGKILLs. An
atexit hook kills anything still alive even if the event loop is gone.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import os
import re
import signal
import sys
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import aiohttp
import psutil

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0
_PR_SET_PDEATHSIG = 1

_CHILDREN: set[int] = set()


def _kill_leftovers() -> None:
    for pid in list(_CHILDREN):
        with contextlib.suppress(psutil.Error):
            child = psutil.Process(pid)
            if child.ppid() == os.getpid():
                child.kill()


atexit.register(_kill_leftovers)


def base_env(emulator_url: str = "") -> dict[str, str]:
    """Dummy credentials (the emulator accepts any signature) and no real AWS configuration."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "SAGEWIRE_")) or k == "AWS_CA_BUNDLE"
    }
    env.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
    )
    if emulator_url:
        env["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"] = emulator_url
    return env


class ServiceDied(RuntimeError):
    """A server process ended while the benchmark still needed it."""

    def __init__(self, service: Service) -> None:
        tail = "".join(list(service.log)[-20:]) or "(no output)\n"
        super().__init__(
            f"{service.name} (pid {service.process.pid}) exited with code "
            f"{service.process.returncode} while the benchmark was running; its last output:\n"
            + tail
        )


@dataclass
class Service:
    """A started server process."""

    name: str
    process: asyncio.subprocess.Process
    address: str  # URL for HTTP servers, host:port for gRPC ones
    rest_address: str = ""  # sagewire's REST bridge (URL), when it serves one
    log: deque[str] = field(default_factory=lambda: deque(maxlen=200))

    def rss_mb(self) -> float:
        try:
            return float(psutil.Process(self.process.pid).memory_info().rss) / 2**20
        except psutil.NoSuchProcess:
            raise ServiceDied(self) from None

    def cpu_s(self) -> float:
        """User + system CPU seconds used so far."""
        try:
            times = psutil.Process(self.process.pid).cpu_times()
        except psutil.NoSuchProcess:
            raise ServiceDied(self) from None
        return float(times.user + times.system)


def _die_with_parent() -> None:
    """Linux: the child gets SIGTERM if the benchmark dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


async def spawn(
    args: list[str], env: Mapping[str, str], *, stdin: bool = False
) -> asyncio.subprocess.Process:
    """Start a child in the repository. Servers get stderr merged into stdout (one log);
    with `stdin` (load generators) stdout carries results and stderr is separate."""
    process = await asyncio.create_subprocess_exec(
        *args,
        cwd=REPO,
        env=dict(env),
        stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.STDOUT,
        preexec_fn=_die_with_parent,
    )
    _CHILDREN.add(process.pid)
    return process


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    _CHILDREN.discard(process.pid)


async def _wait_for_line(
    service_name: str,
    process: asyncio.subprocess.Process,
    pattern: re.Pattern[str],
    log: deque[str],
) -> str:
    """Read output until `pattern` matches; its first group is the address."""
    assert process.stdout is not None
    async with asyncio.timeout(START_TIMEOUT_S):
        while True:
            raw = await process.stdout.readline()
            if not raw:
                raise RuntimeError(f"{service_name} exited before it was ready:\n" + "".join(log))
            line = raw.decode(errors="replace")
            log.append(line)
            match = pattern.search(line)
            if match:
                return match.group(1)


async def _drain(process: asyncio.subprocess.Process, log: deque[str]) -> None:
    """Keep reading output so a chatty server never blocks on a full pipe."""
    assert process.stdout is not None
    while raw := await process.stdout.readline():
        log.append(raw.decode(errors="replace"))


async def _wait_http(url: str) -> None:
    async with asyncio.timeout(START_TIMEOUT_S), aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)


class Services:
    """Start servers; stop every one of them on exit, whatever happened."""

    def __init__(self) -> None:
        self._services: list[Service] = []
        self._drains: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Services:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop_all()

    async def stop_all(self) -> None:
        await asyncio.gather(*(stop(s.process) for s in self._services), return_exceptions=True)
        for task in self._drains:
            task.cancel()
        await asyncio.gather(*self._drains, return_exceptions=True)
        self._services.clear()
        self._drains.clear()

    async def retire(self, service: Service) -> None:
        """Stop one service (e.g. to measure a fresh process next)."""
        await stop(service.process)
        if service in self._services:
            self._services.remove(service)

    @property
    def running(self) -> list[Service]:
        return list(self._services)

    async def _start(
        self,
        name: str,
        args: list[str],
        env: Mapping[str, str],
        ready: re.Pattern[str] | None,
    ) -> Service:
        process = await spawn(args, env)
        service = Service(name, process, "")
        self._services.append(service)
        if ready is not None:
            service.address = await _wait_for_line(name, process, ready, service.log)
        self._drains.append(asyncio.create_task(_drain(process, service.log)))
        return service

    async def helper(self, name: str, args: list[str], ready: re.Pattern[str]) -> Service:
        """Any other server a benchmark needs (e.g. its own upstream), started like the rest;
        it is ready when a line of its output matches `ready`, whose group is its address."""
        return await self._start(name, args, base_env(), ready)

    async def emulator(self, config: Path) -> Service:
        return await self._start(
            "emulator",
            [
                sys.executable,
                "-m",
                "sagewire.emulator",
                "--config",
                str(config),
                "--port",
                "0",
                "--log-level",
                "WARNING",
            ],
            base_env(),
            re.compile(r"emulator on (http://\S+)"),
        )

    async def sagewire(
        self,
        config: Path,
        emulator_url: str,
        launcher: Sequence[str] = (),
        extra_env: Mapping[str, str] | None = None,
        name: str = "sagewire",
        serve_args: Sequence[str] = (),
    ) -> Service:
        """`sagewire serve`; `launcher` runs it under another program (e.g. a profiler that
        takes `-m module`), `extra_env` adds variables (e.g. PYTHONPATH for another tree),
        `serve_args` options of `serve` (e.g. `--workers 2`)."""
        env = {
            **base_env(emulator_url),
            "SAGEWIRE_SERVER__LISTEN": "127.0.0.1:0",
            # The REST bridge beside gRPC, as `make run` serves it (a tree without the bridge
            # ignores the variable).
            "SAGEWIRE_REST__LISTEN": "127.0.0.1:0",
            **(extra_env or {}),
        }
        command = [*launcher, "-m", "sagewire.cli.main"] if launcher else [str(BIN / "sagewire")]
        service = await self._start(
            name,
            [*command, "serve", "--config", str(config), *serve_args],
            env,
            re.compile(r"sagewire ready on (\S+)"),
        )
        # Logged before the ready line, so it is in the log already.
        rest = re.compile(r"sagewire REST bridge on (http://\S+)")
        found = [m.group(1) for line in service.log if (m := rest.search(line))]
        service.rest_address = found[-1] if found else ""
        return service

    async def grpc_echo(self, upstream: str = "") -> Service:
        """The bare gRPC echo server; with `upstream` (the emulator's URL) its Invoke forwards
        to the emulator (bench.contenders.grpc_echo)."""
        extra = ["--upstream", upstream] if upstream else []
        return await self._start(
            "grpc-echo-upstream" if upstream else "grpc-echo",
            [sys.executable, "-m", "bench.contenders.grpc_echo", "--listen", "127.0.0.1:0", *extra],
            base_env(),
            re.compile(r"grpc echo ready on (\S+)"),
        )

    async def fastapi(self, emulator_url: str) -> Service:
        # Started the way its users would: the uvicorn CLI, one worker, port 0 (uvicorn logs the
        # bound port at INFO). The access log is off because sagewire logs only failures.
        service = await self._start(
            "fastapi",
            [
                str(BIN / "uvicorn"),
                "bench.contenders.fastapi_gateway:app",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--workers",
                "1",
                "--no-access-log",
                "--log-level",
                "info",
                "--backlog",
                "2048",
            ],
            base_env(emulator_url),
            re.compile(r"Uvicorn running on (http://\S+)"),
        )
        await _wait_http(service.address + "/healthz")
        return service
