"""Render deploy/k8s overlays with `kubectl kustomize` and read what a pod would run with.

kubectl is part of the machine image (CI runs on the same image). Where it is missing the
tests that need it skip with a reason that says so (pytest -ra prints it in the summary).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # PyYAML ships no type information

from sagewire.config import Settings, load_settings

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = ["dev", "prod"]
KUBECTL = shutil.which("kubectl")
NO_KUBECTL = (
    "KUBECTL NOT FOUND: deploy/k8s overlays were NOT rendered or validated "
    "(install kubectl >= 1.27, which bundles kustomize v5)"
)
# Stands in for Secrets the overlays expect to exist in the cluster (made outside git).
TEST_SECRETS = {
    ("sagewire-job-id-keys", "job_id_keys"): '["dGVzdC1vbmx5LWpvYi1pZC1rZXktMzItYnl0ZXMtbG9uZw=="]'
}


def render(overlay: str) -> list[dict[str, Any]]:
    """The overlay's resources as `kubectl kustomize` prints them."""
    assert KUBECTL is not None, NO_KUBECTL
    result = subprocess.run(
        [KUBECTL, "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def one(resources: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        r
        for r in resources
        if r["kind"] == kind and (name is None or r["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{len(found)} {kind} named {name}"
    return found[0]


def container(resources: list[dict[str, Any]]) -> dict[str, Any]:
    pod = one(resources, "Deployment")["spec"]["template"]["spec"]
    assert len(pod["containers"]) == 1
    result: dict[str, Any] = pod["containers"][0]
    return result


def config_toml(resources: list[dict[str, Any]]) -> str:
    """The sagewire.toml of the ConfigMap the Deployment mounts at the path `--config` names."""
    pod = one(resources, "Deployment")["spec"]["template"]["spec"]
    args = container(resources)["args"]
    config_path = Path(args[args.index("--config") + 1])
    mount = next(
        m for m in container(resources)["volumeMounts"] if m["mountPath"] == str(config_path.parent)
    )
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    config_map = one(resources, "ConfigMap", volume["configMap"]["name"])
    text: str = config_map["data"][config_path.name]
    return text


def container_env(resources: list[dict[str, Any]]) -> dict[str, str]:
    """The container's environment, with Secret references resolved from the rendered Secrets
    (or TEST_SECRETS for ones the overlay expects to exist already)."""
    import base64

    env: dict[str, str] = {}
    for item in container(resources).get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        ref = item["valueFrom"]["secretKeyRef"]
        secrets = [
            r for r in resources if r["kind"] == "Secret" and r["metadata"]["name"] == ref["name"]
        ]
        if secrets:
            secret = secrets[0]
            if ref["key"] in secret.get("stringData", {}):
                env[item["name"]] = secret["stringData"][ref["key"]]
            else:
                env[item["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
        else:
            base_name = ref["name"]
            env[item["name"]] = TEST_SECRETS[(base_name, ref["key"])]
    return env


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """os.environ with `values` set (and no other SAGEWIRE_* variable), restored after."""
    saved = dict(os.environ)
    for key in [k for k in os.environ if k.upper().startswith("SAGEWIRE_")]:
        del os.environ[key]
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def image_env() -> dict[str, str]:
    """The SAGEWIRE_* variables the image itself sets (the Dockerfile's last stage's ENV): they
    override the ConfigMap's file unless the container's own env overrides them in turn."""
    stage = (REPO / "Dockerfile").read_text(encoding="utf-8").rsplit("\nFROM ", 1)[1]
    env: dict[str, str] = {}
    for instruction in stage.replace("\\\n", " ").splitlines():
        if instruction.startswith("ENV "):
            for pair in shlex.split(instruction.removeprefix("ENV ")):
                key, _, value = pair.partition("=")
                if key.startswith("SAGEWIRE_"):
                    env[key] = value
    return env


def pod_env(resources: list[dict[str, Any]]) -> dict[str, str]:
    """The SAGEWIRE_* environment of the pod's process: the image's, then the container's."""
    return {**image_env(), **container_env(resources)}


def pod_settings(resources: list[dict[str, Any]], path: Path) -> Settings:
    """What `sagewire serve` in the pod loads: the ConfigMap's file plus the pod's env."""
    path.write_text(config_toml(resources), encoding="utf-8")
    with environment(pod_env(resources)):
        return load_settings(path)
