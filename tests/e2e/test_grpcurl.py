"""The README's grpcurl commands, run with the real grpcurl binary against `sagewire local`."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator

import pytest
from processes import REPO, Process, grpcurl, grpcurl_messages, sagewire_process

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def local() -> Iterator[Process]:
    with sagewire_process("local", "--config", "config/local.toml") as process:
        yield process


def test_list_services_via_reflection(local: Process) -> None:
    result = grpcurl("-plaintext", local.target, "list")
    assert result.returncode == 0, result.stderr
    services = result.stdout.split()
    assert "sagewire.v1.InferenceService" in services
    assert "sagewire.v1.ModelService" in services
    assert "grpc.health.v1.Health" in services


def test_describe_invoke(local: Process) -> None:
    result = grpcurl("-plaintext", local.target, "describe", "sagewire.v1.InferenceService")
    assert result.returncode == 0, result.stderr
    assert (
        "rpc Invoke ( .sagewire.v1.InvokeRequest ) returns ( .sagewire.v1.InvokeResponse )"
        in result.stdout
    )
    message = grpcurl("-plaintext", local.target, "describe", "sagewire.v1.InvokeRequest")
    assert ".google.protobuf.Value json = 3;" in message.stdout


def test_invoke_with_json(local: Process) -> None:
    result = grpcurl(
        "-plaintext",
        "-d",
        '{"model":"echo","json":{"inputs":"hi"}}',
        local.target,
        "sagewire.v1.InferenceService/Invoke",
    )
    assert result.returncode == 0, result.stderr
    response = json.loads(result.stdout)
    assert response["json"] == {"inputs": "hi"}
    assert response["content_type"] == "application/json"
    assert response["invoked_production_variant"] == "AllTraffic"


def test_invoke_stream_on_tokens(local: Process) -> None:
    result = grpcurl(
        "-plaintext",
        "-d",
        '{"model":"tokens","json":{"text":"hello from sagewire"}}',
        local.target,
        "sagewire.v1.InferenceService/InvokeStream",
    )
    assert result.returncode == 0, result.stderr
    messages = grpcurl_messages(result.stdout)
    assert [m["json"].get("token") for m in messages[:3]] == ["hello", "from", "sagewire"]
    assert messages[-1]["json"] == {"done": True, "count": 3}


def test_health_check(local: Process) -> None:
    result = grpcurl("-plaintext", local.target, "grpc.health.v1.Health/Check")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"status": "SERVING"}


def test_unknown_model_error_is_readable(local: Process) -> None:
    result = grpcurl(
        "-plaintext",
        "-d",
        '{"model":"nope","json":{}}',
        local.target,
        "sagewire.v1.InferenceService/Invoke",
    )
    assert result.returncode != 0
    assert "Code: NotFound" in result.stderr
    assert "unknown model 'nope'" in result.stderr
    assert '"reason":"UNKNOWN_MODEL"' in result.stderr


def test_streaming_docs_sse_example_runs_as_printed(local: Process) -> None:
    """docs/streaming.md's `sse` example: one message per Server-Sent Event of `sse-tokens`."""
    doc = (REPO / "docs" / "streaming.md").read_text(encoding="utf-8")
    section = doc[doc.index("## Server-Sent Events") :]
    start = section.index("```sh\n") + len("```sh\n")
    block = section[start : section.index("\n```", start)]
    args = shlex.split(block.replace("\\\n", " "))
    assert args[0] == "grpcurl"
    result = grpcurl(*(local.target if a == "127.0.0.1:50051" else a for a in args[1:]))
    assert result.returncode == 0, result.stderr
    messages = grpcurl_messages(result.stdout)
    assert [m["json"]["token"]["text"] for m in messages[:3]] == ["hello", "from", "sagewire"]
    assert messages[-1]["json"] == {"token": None, "generated_text": "hello from sagewire"}
    assert len(messages) == 4  # the comment and data: [DONE] are not messages
