"""`sagewire serve --workers N` as an operator runs it: real processes sharing the ports, real
gRPC clients over loopback, the real emulator. Which worker served a call is read from the
access records, where each worker names its pid ("INFO [pid] sagewire.access ...")."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from processes import BIN, EMULATOR_TABLES, OWN_CONNECTION, Process, invoke, sagewire_process
from scrape import scrape, scrape_until

from sagewire.emulator.faults import Fault
from sagewire.emulator.server import RunningEmulator
from sagewire.v1 import inference_service_pb2_grpc, invoke_pb2

pytestmark = pytest.mark.e2e

CONFIG = (
    """
[server]
listen = "127.0.0.1:0"
drain_delay_s = {drain}
shutdown_grace_s = 30
# Long-lived connections are asked to reconnect (0: never), landing on a worker picked anew.
max_connection_age_s = {age}
"""
    + EMULATOR_TABLES
    + """
[routes.echo]
endpoint = "echo"
max_concurrency = 8

[routes.aged]
endpoint = "echo"

[routes.slow]
endpoint = "faulty"
max_concurrency = 32
timeout_s = 60
"""
)
ACCESS = re.compile(r"\[(\d+)\] sagewire\.access \S+InferenceService/Invoke model=(\S+) -> OK")
HEALTH_CHECK = re.compile(r"\[(\d+)\] sagewire\.access \S*grpc\.health\.v1\.Health/Check ")
WORKERS = re.compile(r"sagewire workers: (\d+) \(pids ([\d, ]+)\)")
HANDLED_OK = {
    "grpc_type": "unary",
    "grpc_service": "sagewire.v1.InferenceService",
    "grpc_method": "Invoke",
    "grpc_code": "OK",
}


@contextmanager
def workers(
    emulator: RunningEmulator, tmp_path: Path, drain: float = 0, age: float = 1
) -> Iterator[Process]:
    config = tmp_path / "sagewire.toml"
    config.write_text(CONFIG.format(url=emulator.url, drain=drain, age=age))
    args = ("serve", "--config", str(config), "--workers", "2")
    with sagewire_process(*args, unset=["PROMETHEUS_MULTIPROC_DIR"]) as process:
        yield process


def worker_pids(process: Process) -> list[int]:
    found = [m for line in process.log if (m := WORKERS.search(line))]
    return [int(pid) for pid in found[0].group(2).split(", ")]


def served_by(process: Process, model: str) -> set[int]:
    """The pids whose access records show an OK Invoke of `model`."""
    return {int(m.group(1)) for line in process.log if (m := ACCESS.search(line)) and m[2] == model}


async def until_served_by_both(process: Process, model: str, pids: list[int]) -> int:
    """Invoke `model` on fresh connections until both workers served one; the call count."""
    calls = 0
    while served_by(process, model) != set(pids):
        assert calls < 64, (served_by(process, model), pids)
        await asyncio.gather(
            *(invoke(process.target, model, own_connection=True) for _ in range(8))
        )
        calls += 8
        await asyncio.sleep(0.2)  # the access records reach the log
    return calls


async def test_two_workers_serve_one_port_and_one_set_of_metrics(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    with workers(emulator, tmp_path) as process:
        pids = worker_pids(process)
        assert len(set(pids)) == 2
        assert process.popen.pid not in pids
        calls = await until_served_by_both(process, "echo", pids)
        # The parent's one /metrics sums both workers' values.
        found = await scrape_until(
            process.metrics_url,
            lambda s: s.value("grpc_server_handled_total", **HANDLED_OK) == calls,
        )
        assert found.value("grpc_server_handled_total", **HANDLED_OK) == calls
        upstream = {"model": "echo", "operation": "InvokeEndpoint", "outcome": "OK"}
        assert found.value("sagewire_upstream_requests_total", **upstream) == calls
        assert found.value("sagewire_route_max_concurrency", model="echo") == 16  # 2 × 8
        # One channel, kept open: server.max_connection_age_s applies in every worker, so its
        # connection is renewed and lands on both in turn.
        async with grpc.aio.insecure_channel(process.target, options=OWN_CONNECTION) as channel:
            stub = inference_service_pb2_grpc.InferenceServiceStub(channel)
            for _ in range(300):
                await stub.Invoke(invoke_pb2.InvokeRequest(model="aged", body=b"{}"), timeout=60)
                if served_by(process, "aged") == set(pids):
                    break
                await asyncio.sleep(0.1)
        assert served_by(process, "aged") == set(pids)
        # A second gateway on the same port (SO_REUSEPORT would let it join silently) is
        # refused at its start-up check, before any worker starts.
        with socket.socket() as probe:
            probe.settimeout(5)
            probe.connect(("127.0.0.1", int(process.target.rsplit(":", 1)[1])))
        config = tmp_path / "sagewire.toml"
        second = await asyncio.create_subprocess_exec(
            str(BIN / "sagewire"),
            *("serve", "--config", str(config), "--workers", "2"),
            env={**_env(), "SAGEWIRE_SERVER__LISTEN": process.target},
            stderr=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
        )
        _, err = await asyncio.wait_for(second.communicate(), 60)
        assert second.returncode == 1
        assert err.decode().splitlines() == [
            f"sagewire: cannot listen on {process.target} (gRPC, server.listen): "
            "address already in use"
        ]
        assert await asyncio.to_thread(process.stop) == 0


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "SAGEWIRE_REST__LISTEN": "127.0.0.1:0",
        "SAGEWIRE_TELEMETRY__METRICS_LISTEN": "127.0.0.1:0",
    }


async def invoke_on(channel: grpc.aio.Channel, model: str) -> bytes:
    stub = inference_service_pb2_grpc.InferenceServiceStub(channel)
    answer = await stub.Invoke(invoke_pb2.InvokeRequest(model=model, body=b"{}"), timeout=60)
    return answer.body


async def one_channel_per_worker(
    process: Process, stack: AsyncExitStack, pids: list[int]
) -> dict[int, grpc.aio.Channel]:
    """A channel (one connection) on each worker: each new connection's first health Check
    names its worker in the access record it leaves."""
    found: dict[int, grpc.aio.Channel] = {}
    for _ in range(32):
        channel = await stack.enter_async_context(
            grpc.aio.insecure_channel(process.target, options=OWN_CONNECTION)
        )
        before = len(health_checks(process))
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        for _ in range(200):  # the record is written as the call ends
            if len(checks := health_checks(process)) > before:
                found.setdefault(checks[-1], channel)
                break
            await asyncio.sleep(0.05)
        if set(found) == set(pids):
            return found
    raise AssertionError(f"32 connections did not reach both workers {pids}: {set(found)}")


def health_checks(process: Process) -> list[int]:
    """The pids of the access records of health Checks, in order."""
    return [int(m.group(1)) for line in process.log if (m := HEALTH_CHECK.search(line))]


async def watch_until_not_serving(channel: grpc.aio.Channel) -> list[int]:
    """The statuses a health Watch reports on `channel` until one is not SERVING."""
    seen: list[int] = []
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=90)
    async for answer in watch:
        seen.append(int(answer.status))
        if answer.status != health_pb2.HealthCheckResponse.SERVING:
            break
    watch.cancel()
    return seen


async def test_sigterm_drains_every_worker_together(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    emulator.set_fault("faulty", Fault(latency_ms=6000))
    with workers(emulator, tmp_path, drain=3, age=0) as process:
        pids = worker_pids(process)
        async with AsyncExitStack() as stack:
            channels = await one_channel_per_worker(process, stack, pids)
            # On each worker: two slow calls in flight and a health Watch.
            slow = [
                asyncio.create_task(invoke_on(channel, "slow"))
                for channel in channels.values()
                for _ in range(2)
            ]
            watches = [asyncio.create_task(watch_until_not_serving(c)) for c in channels.values()]
            await scrape_until(
                process.metrics_url,
                lambda s: s.value("sagewire_route_in_flight", model="slow") == 4,
            )
            process.popen.send_signal(signal.SIGTERM)
            # Readiness flips on both workers: each Watch sees NOT_SERVING.
            for seen in await asyncio.gather(*watches):
                assert seen[0] == health_pb2.HealthCheckResponse.SERVING
                assert seen[-1] == health_pb2.HealthCheckResponse.NOT_SERVING
            for answer in await asyncio.gather(*slow):  # all finished, none failed
                assert answer == b"{}"
        assert await asyncio.to_thread(process.popen.wait, 60) == 0
    assert served_by(process, "slow") == set(pids)
    assert sum(1 for line in process.log if "shutting down: refusing new calls" in line) == 2
    with pytest.raises(ConnectionRefusedError), socket.socket() as late:
        late.connect(("127.0.0.1", int(process.target.rsplit(":", 1)[1])))


async def test_a_killed_worker_is_restarted(emulator: RunningEmulator, tmp_path: Path) -> None:
    with workers(emulator, tmp_path) as process:
        pids = worker_pids(process)
        killed = pids[0]
        os.kill(killed, signal.SIGKILL)
        restarted = re.compile(r"worker 0 restarted \(pid (\d+)\)")
        for _ in range(600):  # a 1 s backoff, then a worker start on a busy machine
            if found := [m for line in process.log if (m := restarted.search(line))]:
                break
            await asyncio.sleep(0.1)
        assert found, "".join(process.log)
        replacement = int(found[0].group(1))
        assert replacement not in pids
        assert any(f"worker 0 (pid {killed}) exited unexpectedly" in line for line in process.log)
        # Both live workers serve again; the dead one's live gauges are gone from the sum.
        await until_served_by_both(process, "echo", [pids[1], replacement])
        seen = await scrape(process.metrics_url)
        assert seen.value("sagewire_route_max_concurrency", model="echo") == 16
        assert await asyncio.to_thread(process.stop) == 0


async def test_a_worker_that_cannot_start_stops_them_all(tmp_path: Path) -> None:
    # aws.ca_bundle is read when the bidi client opens, in each worker: the parent exits with
    # the workers' status (2, a configuration error, as one process would) and serves nothing.
    config = tmp_path / "bad.toml"
    config.write_text(
        '[server]\nlisten = "127.0.0.1:0"\n[aws]\nca_bundle = "/nonexistent/ca.pem"\n'
        '[routes.speech]\nendpoint = "speech"\nmode = "bidi"\n'
    )
    run = await asyncio.create_subprocess_exec(
        str(BIN / "sagewire"),
        *("serve", "--config", str(config), "--workers", "2"),
        env=_env(),
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
    )
    _, err = await asyncio.wait_for(run.communicate(), 90)
    assert run.returncode == 2
    assert "aws.ca_bundle '/nonexistent/ca.pem' is not a readable file" in err.decode()
    assert "sagewire ready" not in err.decode()
    assert "Traceback" not in err.decode()
