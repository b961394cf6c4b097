"""Run sagewire as a real process, the way `make run` does, on a free loopback port, and call it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from sagewire.v1 import inference_service_pb2_grpc, invoke_pb2

REPO = Path(__file__).resolve().parents[1]
# The [aws] and [telemetry] tables of a `sagewire serve` config: the test emulator at {url}
# (format it in), one attempt per call, /metrics on a free port.
EMULATOR_TABLES = """
[aws]
runtime_endpoint_url = "{url}"
max_attempts = 1

[telemetry]
metrics_listen = "127.0.0.1:0"
"""
# A channel option: this channel's own TCP connection (with `--workers`, the kernel picks a
# worker per connection).
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
BIN = Path(sys.executable).parent
# An address ends at white space or a quote: with server.log_format = "json" the same words
# also appear inside a logged JSON string.
READY = re.compile(r"sagewire ready on ([^\s\"]+)")
REST = re.compile(r"sagewire REST bridge on ([^\s\"]+)")
METRICS = re.compile(r"metrics on (http://[^\s\"]+)")


@dataclass
class Process:
    popen: subprocess.Popen[str]
    target: str
    log: list[str] = field(default_factory=list)
    rest_url: str = ""  # http://host:port of the REST bridge, when it listens
    metrics_url: str = ""  # when the process serves /metrics

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        return self.popen.wait(timeout=timeout)


@contextmanager
def sagewire_process(
    *args: str, env: dict[str, str] | None = None, unset: Sequence[str] = ()
) -> Iterator[Process]:
    """Start `sagewire ARGS` listening on 127.0.0.1:0 and wait for its ready line; `unset`
    names environment variables it must not inherit."""
    environ = {
        **os.environ,
        "SAGEWIRE_SERVER__LISTEN": "127.0.0.1:0",
        "SAGEWIRE_REST__LISTEN": "127.0.0.1:0",
        "SAGEWIRE_TELEMETRY__METRICS_LISTEN": "127.0.0.1:0",  # config/local.toml says 9464
        **(env or {}),
    }
    for name in unset:
        environ.pop(name, None)
    popen = subprocess.Popen(
        [str(BIN / "sagewire"), *args],
        cwd=REPO,
        env=environ,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    log: list[str] = []
    ready = threading.Event()
    target: list[str] = []
    rest: list[str] = []

    def drain() -> None:
        assert popen.stderr is not None
        for line in popen.stderr:
            log.append(line)
            if found := REST.search(line):
                rest.append(found.group(1))
            match = READY.search(line)
            if match and not ready.is_set():
                target.append(match.group(1))
                ready.set()

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + 90  # start-up is slow on a contended machine
    while not ready.wait(0.1):
        if popen.poll() is not None or time.monotonic() > deadline:
            popen.kill()
            raise RuntimeError("sagewire did not start:\n" + "".join(log))
    found = [m.group(1) for line in log if (m := METRICS.search(line))]
    process = Process(popen, target[0], log, rest[0] if rest else "", found[0] if found else "")
    try:
        yield process
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.wait()


async def invoke(target: str, model: str, *, own_connection: bool = False) -> None:
    """One unary Invoke of `model` (body `{}`, 60 s deadline) on a channel of its own."""
    options = OWN_CONNECTION if own_connection else []
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        stub = inference_service_pb2_grpc.InferenceServiceStub(channel)
        await stub.Invoke(invoke_pb2.InvokeRequest(model=model, body=b"{}"), timeout=60)


def grpcurl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "grpcurl"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def grpcurl_messages(stdout: str) -> list[dict[str, Any]]:
    """grpcurl prints one pretty JSON object per response message."""
    decoder, text, at, out = json.JSONDecoder(), stdout.strip(), 0, []
    while at < len(text):
        message, at = decoder.raw_decode(text, at)
        out.append(message)
        while at < len(text) and text[at].isspace():
            at += 1
    return out
