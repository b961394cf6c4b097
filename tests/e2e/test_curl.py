"""The curl commands of README.md and docs/rest.md, run as printed (only the port changes) with
the real curl binary against `sagewire local`, one bash session per code block so shell
variables carry from line to line as they would in a terminal."""

from __future__ import annotations

import ast
import base64
import json
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from processes import REPO, Process, sagewire_process

pytestmark = pytest.mark.e2e

DOCS = [REPO / "README.md", REPO / "docs" / "rest.md"]
PRINTED_ADDRESS = "127.0.0.1:8080"
_BLOCK = re.compile(r"```sh\n(.*?)```", re.DOTALL)
_MARK = "@@sagewire-doc-test@@"
_CURL = re.compile(r"(^|[\s(])curl\s")  # curl itself, not grpcurl


def curl_blocks(path: Path) -> list[list[str]]:
    """The shell commands of each ```sh block that runs curl (comments dropped)."""
    blocks = []
    for block in _BLOCK.findall(path.read_text()):
        commands = [line for line in block.splitlines() if line and not line.startswith("#")]
        if any(_CURL.search(command) for command in commands):
            blocks.append(commands)
    return blocks


def _json_lines(out: str) -> list[Any]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def _sse(out: str) -> list[Any]:
    return [json.loads(line[6:]) for line in out.splitlines() if line.startswith("data: ")]


def _check_list(out: str) -> None:
    assert "echo" in [m["name"] for m in json.loads(out)["models"]]


def _check_get(out: str) -> None:
    assert json.loads(out)["model"]["name"] == "echo"


def _check_invoke(out: str) -> None:
    assert json.loads(out)["json"] == {"inputs": "hi"}


def _check_bytes(out: str) -> None:
    answer = json.loads(out)
    assert (base64.b64decode(answer["body"]), answer["contentType"]) == (b"hello", "text/plain")


def _check_ndjson(out: str) -> None:
    messages = _json_lines(out)
    assert [m["json"].get("token") for m in messages[:3]] == ["hello", "from", "sagewire"]
    assert messages[-1]["json"] == {"done": True, "count": 3}


def _check_sse(out: str) -> None:
    assert [m["json"].get("token") for m in _sse(out)[:3]] == ["hello", "from", "sagewire"]


def _check_deadline(out: str) -> None:
    answer = json.loads(out)
    assert answer["json"] == {"inputs": "hi"}


def _check_error(out: str) -> None:
    head, _, body = out.replace("\r\n", "\n").partition("\n\n")
    assert head.startswith("HTTP/1.1 404")
    status = json.loads(body)
    assert status["code"] == 5
    assert status["details"][0]["reason"] == "UNKNOWN_MODEL"


def _check_ready(out: str) -> None:
    assert json.loads(out) == {"status": "SERVING"}


def _check_watch(out: str) -> None:
    assert _json_lines(out)[-1]["state"] == "ASYNC_STATE_COMPLETED"


def _check_result(out: str) -> None:
    answer = json.loads(out)
    assert answer["state"] == "ASYNC_STATE_COMPLETED"
    assert answer["json"] == {"inputs": "later"}


def _check_output(out: str) -> None:
    chunks = _json_lines(out)
    data = b"".join(base64.b64decode(c.get("chunk", "")) for c in chunks)
    assert json.loads(data) == {"inputs": "later"}


INPUT = {"inputs": "hello", "parameters": {"max_new_tokens": 20}}


def _check_raw(out: str) -> None:
    assert json.loads(out) == INPUT  # the model's bytes, no envelope


def _check_raw_headers(out: str) -> None:
    head, _, body = out.replace("\r\n", "\n").partition("\n\n")
    lines = head.lower().splitlines()
    assert lines[0].startswith("http/1.1 200")
    assert "content-type: application/json" in lines
    assert "x-amzn-sagemaker-custom-attributes: trace=1" in lines
    assert json.loads(body) == INPUT


def _check_raw_stream(out: str) -> None:
    tokens = [line.get("token") for line in _json_lines(out)]
    assert tokens == ["hello", "from", "sagewire", None]


def _check_upload(out: str) -> None:
    answer = json.loads(out)
    assert answer["job"]["inferenceId"] == "my-upload"
    assert answer["inputSize"] == "27"


def _check_openapi(out: str) -> None:
    paths = ast.literal_eval(out)  # the printed Python list
    assert "/v1/models/{model}/invocations" in paths
    assert "/v1/models/{model}:invoke" in paths


# (pattern on the printed command, check of its output); the first match applies.
CHECKS: list[tuple[str, Callable[[str], None]]] = [
    (r"^printf .*> input\.json$", lambda out: None),
    (r"-i --data-binary .*echo/invocations$", _check_raw_headers),
    (r"echo/invocations$", _check_raw),
    (r"invocations-response-stream$", _check_raw_stream),
    (r":uploadAsync$", _check_upload),
    (r"openapi\.json", _check_openapi),
    (r"^JOB=", lambda out: None),
    (r":watch\"$", _check_watch),
    (r"/output\"$", _check_output),
    (r"/v1/jobs/\$JOB\"$", _check_result),
    (r"-i .*nope:invoke$", _check_error),
    (r"Grpc-Timeout", _check_deadline),
    (r"text/event-stream.*invokeStream$", _check_sse),
    (r"invokeStream$", _check_ndjson),
    (r"aGVsbG8=.*echo:invoke$", _check_bytes),
    (r"inputs\":\"hi\"}}' \S+/v1/models/echo:invoke$", _check_invoke),
    (r"/v1/models/echo$", _check_get),
    (r"/v1/models$", _check_list),
    (r"/readyz$", _check_ready),
]


def _generic(out: str) -> None:
    """Commands without their own check: a non-empty answer that is not an error Status."""
    assert out.strip()
    first = out.splitlines()[0]
    if first.startswith("{"):
        data = json.loads(first)
        assert not ("code" in data and "message" in data and data.get("code")), data


def _run_block(commands: list[str], address: str, cwd: Path) -> list[tuple[str, int, str]]:
    script = "".join(
        f"{command.replace(PRINTED_ADDRESS, address)}\nprintf '\\n{_MARK} %s\\n' $?\n"
        for command in commands
    )
    result = subprocess.run(
        ["bash", "-c", script], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    runs: list[tuple[str, int, str]] = []
    text = result.stdout
    for command in commands:
        out, _, rest = text.partition(f"\n{_MARK} ")
        code, _, text = rest.partition("\n")
        runs.append((command, int(code or -1), out))
    assert len(runs) == len(commands), result.stderr
    return runs


@pytest.fixture(scope="module")
def local() -> Iterator[Process]:
    with sagewire_process("local", "--config", "config/local.toml") as process:
        yield process


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: path.name)
def test_doc_curl_commands_run_as_printed(local: Process, doc: Path, tmp_path: Path) -> None:
    blocks = curl_blocks(doc)
    assert blocks, f"{doc.name} has no curl block"
    address = local.rest_url.removeprefix("http://")
    for commands in blocks:
        for command, code, out in _run_block(commands, address, tmp_path):  # files go there
            assert code == 0, (command, out)
            check = next((c for pattern, c in CHECKS if re.search(pattern, command)), _generic)
            try:
                check(out)
            except (AssertionError, ValueError, KeyError) as exc:
                raise AssertionError(f"{doc.name}: {command}\n{out}") from exc
