"""deploy/k8s: each overlay renders with `kubectl kustomize`, validates offline against the
Kubernetes schemas (kubernetes-validate, strict), and agrees with what `sagewire serve` does with
the rendered ConfigMap and environment: the port it listens on, the health service the probes
ask, the drain it runs after SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import ssl
import time
from pathlib import Path
from typing import Any, cast

import aiohttp
import grpc
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc
from k8s_render import (
    K8S,
    KUBECTL,
    NO_KUBECTL,
    OVERLAYS,
    config_toml,
    container,
    image_env,
    one,
    pod_env,
    pod_settings,
    render,
)
from processes import Process, sagewire_process

from sagewire.emulator.config import EmulatorConfig, EndpointConfig
from sagewire.emulator.server import running_emulator
from sagewire.v1 import inference_service_pb2_grpc, invoke_pb2

pytestmark = pytest.mark.skipif(KUBECTL is None, reason=NO_KUBECTL)

# The oldest Kubernetes the manifests are for (the preStop `sleep` action is on by default from
# 1.30) and the newest schemas kubernetes-validate ships.
K8S_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
LABELS = {"app.kubernetes.io/name": "sagewire"}


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    name: str = request.param
    return name, render(name)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_overlay_validates_against_the_kubernetes_schemas(
    overlay: tuple[str, list[dict[str, Any]]], version: str
) -> None:
    name, resources = overlay
    for resource in resources:
        kubernetes_validate.validate(resource, version, strict=True)
    kinds = sorted(r["kind"] for r in resources)
    print(f"{name} @ {version}: {len(resources)} resources valid: {kinds}")
    assert {
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
    } <= set(kinds)


def test_example_hpa_on_calls_in_flight_validates() -> None:
    import yaml  # type: ignore[import-untyped]

    example = yaml.safe_load((K8S / "examples" / "hpa-inflight-calls.yaml").read_text())
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(example, version, strict=True)
    names = [m.get("pods", {}).get("metric", {}).get("name") for m in example["spec"]["metrics"]]
    assert "sagewire_calls_in_flight" in names


def test_pod_is_hardened(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, resources = overlay
    pod = one(resources, "Deployment")["spec"]["template"]["spec"]
    main = container(resources)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    security = main["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert {"cpu", "memory"} <= set(main["resources"]["requests"])
    assert "memory" in main["resources"]["limits"]


def test_ports_probes_and_drain_agree_with_the_config(
    overlay: tuple[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    name, resources = overlay
    settings = pod_settings(resources, tmp_path / "sagewire.toml")
    main = container(resources)
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    # Every container port is one sagewire listens on, and every listener has its port.
    listeners = {
        "grpc": settings.server.listen,
        "health": settings.server.maintenance_listen or "",
        "http": settings.rest.listen,
        "metrics": settings.telemetry.metrics_listen or "",
    }
    assert set(ports) == {listener for listener, address in listeners.items() if address}
    # Inside a pod every listener binds every interface, on its container port.
    for listener, address in listeners.items():
        if address:
            assert address.rsplit(":", 1) == ["0.0.0.0", str(ports[listener])], listener
    # The kubelet's gRPC probes cannot do TLS: with TLS on the main port they must ask the
    # plaintext maintenance listener.
    probe_port = ports["health"] if settings.server.maintenance_listen else ports["grpc"]
    assert settings.server.tls is None or settings.server.maintenance_listen
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert main[probe]["grpc"]["port"] == probe_port, probe
    for service in (r for r in resources if r["kind"] == "Service"):
        for service_port in service["spec"]["ports"]:
            assert service_port["targetPort"] in ports, service["metadata"]["name"]
            assert service_port["appProtocol"], service["metadata"]["name"]
        assert service["spec"]["selector"] == LABELS
    pod = one(resources, "Deployment")["spec"]["template"]["spec"]
    pre_stop = main["lifecycle"]["preStop"]["sleep"]["seconds"]
    # The kubelet kills the container at terminationGracePeriodSeconds, counted from the start
    # of preStop: the drain must fit inside it with room for the process to exit.
    drain = settings.server.drain_delay_s + settings.server.shutdown_grace_s
    assert pod["terminationGracePeriodSeconds"] > pre_stop + drain
    print(
        f"{name}: listen {settings.server.listen} (TLS: {settings.server.tls is not None}), "
        f"probes on {probe_port}, preStop {pre_stop}s + "
        f"drain {settings.server.drain_delay_s:g}s + {settings.server.shutdown_grace_s:g}s < "
        f"grace {pod['terminationGracePeriodSeconds']}s"
    )


def test_selectors_and_references_meet(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, resources = overlay
    deployment = one(resources, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    for kind in ("PodDisruptionBudget",):
        assert one(resources, kind)["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    policy = one(resources, "NetworkPolicy")["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    port_names = {p["name"] for p in container(resources)["ports"]}
    for rule in policy["ingress"]:
        for port in rule["ports"]:
            assert port["port"] in port_names
    hpa = one(resources, "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    account = one(resources, "ServiceAccount")
    assert (
        deployment["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]
    )
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith(
        "arn:aws:iam::"
    )
    # The job-id keys come from a Secret, never from the ConfigMap.
    assert "job_id_keys" not in config_toml(resources)
    env = {e["name"]: e for e in container(resources)["env"]}
    assert "secretKeyRef" in env["SAGEWIRE_ASYNC_JOBS__JOB_ID_KEYS"]["valueFrom"]


def test_the_image_environment_is_read() -> None:
    """The image sets the gRPC listener itself; the pod's settings include it (a ConfigMap that
    moved `listen` alone would be overridden by it, and the port test would say so)."""
    assert image_env()["SAGEWIRE_SERVER__LISTEN"] == "0.0.0.0:50051"


def test_overlays_differ_where_they_should() -> None:
    dev, prod = render("dev"), render("prod")
    assert one(dev, "Deployment")["spec"]["replicas"] == 1
    assert one(prod, "Deployment")["spec"]["replicas"] >= 3
    assert one(prod, "HorizontalPodAutoscaler")["spec"]["minReplicas"] >= 3
    affinity = one(prod, "Deployment")["spec"]["template"]["spec"]["affinity"]
    term = affinity["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    # prod: mutual TLS from the Secret sagewire-tls; dev: plaintext.
    prod_env = {e["name"]: e.get("value") for e in container(prod)["env"]}
    assert prod_env["SAGEWIRE_SERVER__TLS__CLIENT_CA_FILE"].startswith("/etc/sagewire/tls/")
    assert not [e for e in container(dev)["env"] if "TLS" in e["name"]]
    volumes = one(prod, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "tls", "secret": {"secretName": "sagewire-tls"}} in volumes
    # Neither keeps a job-id key in git: both expect the Secret to exist in the cluster.
    assert not [r for r in dev + prod if r["kind"] == "Secret"]


# Endpoints named like the base configuration's routes, served by the emulator's demo models.
EMULATOR = EmulatorConfig(
    endpoints={
        "sentiment-prod-v7": EndpointConfig(model="echo"),
        "chat-llm": EndpointConfig(model="tokens"),
        "summariser-async": EndpointConfig(model="echo"),
    }
)


TLS_MOUNT = "/etc/sagewire/tls/"


def _free_port() -> int:
    """A port nothing listens on now (for a listener whose bound port sagewire does not print)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _tls_files(directory: Path) -> tuple[trustme.CA, dict[str, str]]:
    """What cert-manager would put in the Secret sagewire-tls, made by a throwaway CA."""
    ca = trustme.CA()
    directory.mkdir()
    server = ca.issue_cert("localhost", "127.0.0.1")
    server.cert_chain_pems[0].write_to_path(str(directory / "tls.crt"))
    for pem in server.cert_chain_pems[1:]:
        pem.write_to_path(str(directory / "tls.crt"), append=True)
    server.private_key_pem.write_to_path(str(directory / "tls.key"))
    ca.cert_pem.write_to_path(str(directory / "ca.crt"))
    return ca, {name: str(directory / name) for name in ("tls.crt", "tls.key", "ca.crt")}


# prod only: dev renders the same file without TLS, and differs only in what the static tests
# above check.
@pytest.mark.parametrize("name", ["prod"])
async def test_sagewire_serve_runs_the_rendered_config_as_the_probes_expect(
    name: str, tmp_path: Path
) -> None:
    """`sagewire serve` with the overlay's ConfigMap file and the pod's environment: it starts,
    answers the probes' health check SERVING on the port they ask, serves a routed call over
    mutual TLS (and refuses a caller without a certificate), serves REST and metrics, and after
    SIGTERM turns NOT_SERVING, keeps serving for the drain delay and exits 0 well within the
    grace the pod allows."""
    resources = render(name)
    main = container(resources)
    config = tmp_path / "sagewire.toml"
    config.write_text(config_toml(resources), encoding="utf-8")
    ca, tls_files = _tls_files(tmp_path / "tls")
    # Only what a test must change: free loopback ports instead of 0.0.0.0:50051, 8081 (and
    # 8080, 9464: sagewire_process sets those), the Secret's files where the volume would put
    # them, and the emulator instead of AWS.
    env = {
        key: tls_files[value.removeprefix(TLS_MOUNT)] if value.startswith(TLS_MOUNT) else value
        for key, value in pod_env(resources).items()
    }
    tls = "SAGEWIRE_SERVER__TLS__CERT_FILE" in env
    maintenance_port = _free_port()
    if "SAGEWIRE_SERVER__MAINTENANCE_LISTEN" in env:
        env["SAGEWIRE_SERVER__MAINTENANCE_LISTEN"] = f"127.0.0.1:{maintenance_port}"
    async with running_emulator(EMULATOR) as emulator:
        env |= {
            "SAGEWIRE_SERVER__LISTEN": "127.0.0.1:0",
            "SAGEWIRE_AWS__RUNTIME_ENDPOINT_URL": emulator.url,
            "SAGEWIRE_AWS__CONTROL_ENDPOINT_URL": emulator.url,
        }
        with sagewire_process(main["args"][0], "--config", str(config), env=env) as process:
            main_port = int(process.target.rsplit(":", 1)[1])
            probe_port = main["readinessProbe"]["grpc"]["port"]
            ports = {p["containerPort"]: p["name"] for p in main["ports"]}
            probe_target = (
                f"127.0.0.1:{maintenance_port}" if ports[probe_port] == "health" else process.target
            )
            client = ca.issue_cert("caller.example.com")
            credentials = grpc.ssl_channel_credentials(
                root_certificates=ca.cert_pem.bytes(),
                private_key=client.private_key_pem.bytes(),
                certificate_chain=client.cert_chain_pems[0].bytes(),
            )
            async with (
                grpc.aio.insecure_channel(probe_target) as probes,
                (
                    grpc.aio.secure_channel(process.target, credentials)
                    if tls
                    else grpc.aio.insecure_channel(process.target)
                ) as channel,
            ):
                # What the kubelet does: plaintext gRPC health, on the probes' port.
                health = health_pb2_grpc.HealthStub(probes)
                await _probes_answer_serving(health, main, probe_port)
                inference = inference_service_pb2_grpc.InferenceServiceStub(channel)
                request = invoke_pb2.InvokeRequest(model="sentiment", body=b'{"text": "fine"}')
                assert (await inference.Invoke(request, timeout=10)).body == request.body
                if tls:
                    await _refused_without_a_certificate(process.target, ca, request)
                await _rest_and_metrics_answer(process, ca, client if tls else None)
                # SIGTERM: the probes see NOT_SERVING at once, yet calls are still served for
                # server.drain_delay_s, so a health-checking balancer can move away first.
                started = time.monotonic()
                process.popen.send_signal(signal.SIGTERM)
                while True:
                    answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
                    if answer.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                        break
                    assert time.monotonic() - started < 10, "health never turned NOT_SERVING"
                    await asyncio.sleep(0.05)
                assert (await inference.Invoke(request, timeout=10)).body == request.body
                served_draining = time.monotonic() - started
            code = await asyncio.to_thread(process.stop, signal.SIGTERM, 30.0)
            took = time.monotonic() - started
    assert code == 0
    pod = one(resources, "Deployment")["spec"]["template"]["spec"]
    pre_stop = main["lifecycle"]["preStop"]["sleep"]["seconds"]
    settings = pod_settings(resources, tmp_path / "loaded.toml")
    assert served_draining < settings.server.drain_delay_s <= took
    assert took < pod["terminationGracePeriodSeconds"] - pre_stop
    print(
        f"{name}: {'mutual TLS' if tls else 'plaintext'} on {process.target}, probes on "
        f"{probe_target}; after SIGTERM NOT_SERVING, a call served at {served_draining:.1f}s, "
        f"exit 0 at {took:.1f}s (main port {main_port})"
    )


async def _probes_answer_serving(health: Any, main: dict[str, Any], probe_port: int) -> None:
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert main[probe]["grpc"]["port"] == probe_port
        service = main[probe]["grpc"].get("service", "")
        answer = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING, probe


async def _refused_without_a_certificate(
    target: str, ca: trustme.CA, request: invoke_pb2.InvokeRequest
) -> None:
    """Mutual TLS: a caller without a client certificate never reaches a handler."""
    anonymous = grpc.ssl_channel_credentials(ca.cert_pem.bytes())
    async with grpc.aio.secure_channel(target, anonymous) as stranger:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await inference_service_pb2_grpc.InferenceServiceStub(stranger).Invoke(
                request, timeout=10
            )
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE


async def _rest_and_metrics_answer(
    process: Process, ca: trustme.CA, client: trustme.LeafCert | None
) -> None:
    """The REST bridge (over mutual TLS when the gRPC listener has it) and /metrics."""
    assert process.rest_url
    assert process.metrics_url
    rest_url, rest_ssl = process.rest_url, cast("ssl.SSLContext | bool", False)
    if client is not None:
        rest_url = rest_url.replace("http://", "https://")
        context = ssl.create_default_context(cadata=ca.cert_pem.bytes().decode())
        client.configure_cert(context)
        rest_ssl = context
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{rest_url}/readyz", ssl=rest_ssl) as ready:
            assert ready.status == 200
        async with http.get(process.metrics_url) as metrics:
            assert metrics.status == 200, process.metrics_url
            assert "grpc_server_started_total" in await metrics.text()
