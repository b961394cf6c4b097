"""The client CLI as a person or a script runs it: `sagewire invoke|stream|jobs|models` as a
process against a real sagewire, checking what it prints and its exit status; `sagewire chat`
in a real terminal (tmux), including Ctrl-C in the middle of an answer."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import Sagewire

CLI = [sys.executable, "-m", "sagewire.cli.main"]


async def _sagewire(*args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_invoke_prints_the_answer_and_exits_0(sagewire: Sagewire) -> None:
    code, out, _ = await _sagewire(
        "invoke", "echo", "--target", sagewire.target, "--json", '{"id": 9223372036854775807}'
    )
    assert code == 0
    assert json.loads(out) == {"id": 9223372036854775807}

    code, out, _ = await _sagewire(
        "invoke",
        "echo",
        "--target",
        sagewire.target,
        "--output",
        "json",
        "--data",
        "@-",
        "--content-type",
        "text/plain",
        "--option",
        "target_variant=B",
        stdin=b"hello",
    )
    assert code == 0
    assert json.loads(out) == {"content_type": "text/plain", "variant": "B", "text": "hello"}


async def test_call_failures_exit_1_with_the_status_on_stderr(sagewire: Sagewire) -> None:
    code, out, err = await _sagewire("invoke", "nope", "--target", sagewire.target, "--json", "{}")
    assert (code, out) == (1, "")
    assert err.startswith("error: NOT_FOUND (UNKNOWN_MODEL): ")

    code, _, err = await _sagewire(
        "invoke",
        "echo-strict",
        "--target",
        sagewire.target,
        "--json",
        "{}",
        "--output",
        "json",
        "--option",
        "custom_attributes=x",
    )
    assert code == 1
    error = json.loads(err)["error"]
    assert error["reason"] == "OPTION_NOT_ALLOWED"
    assert error["field_violations"][0][0] == "options.custom_attributes"


async def test_usage_errors_exit_2(sagewire: Sagewire) -> None:
    code, _, err = await _sagewire("invoke", "echo", "--target", sagewire.target, "--json", "{x")
    assert code == 2
    assert "--json is not valid JSON" in err
    code, _, err = await _sagewire("invoke", "echo")  # no payload: argparse's own usage error
    assert code == 2
    assert "one of the arguments --json --data is required" in err
    code, _, err = await _sagewire("invoke", "echo", "--data", "@/no/such/file")
    assert code == 2
    assert "No such file" in err


async def test_stream_prints_each_part_as_it_arrives(sagewire: Sagewire) -> None:
    process = await asyncio.create_subprocess_exec(
        *CLI,
        "stream",
        "tokens",
        "--target",
        sagewire.target,
        "--json",
        '{"text": "a b c d e f", "delay_ms": 300}',
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    first = await asyncio.wait_for(process.stdout.readline(), timeout=30)
    assert json.loads(first)["token"] == "a"
    assert process.returncode is None  # still streaming: nothing was buffered to the end
    rest = (await asyncio.wait_for(process.stdout.read(), timeout=30)).decode().splitlines()
    assert await process.wait() == 0
    assert json.loads(rest[-1])["done"] is True


async def test_models(sagewire: Sagewire) -> None:
    code, out, _ = await _sagewire("models", "--target", sagewire.target)
    assert code == 0
    assert any(line.split()[:2] == ["tokens", "stream"] for line in out.splitlines())
    code, out, _ = await _sagewire(
        "models", "echo", "--target", sagewire.target, "--output", "json"
    )
    assert code == 0
    assert json.loads(out)[0]["name"] == "echo"


async def test_jobs_submit_watch_get_upload_read(async_sagewire: Sagewire, tmp_path: Path) -> None:
    target = ["--target", async_sagewire.target]
    code, job_id, _ = await _sagewire(
        "jobs",
        "submit",
        "slow-echo",
        *target,
        "--json",
        '{"a": 1}',
        "--option",
        "custom_attributes=delay_ms=0",
    )
    assert code == 0
    job_id = job_id.strip()
    code, out, _ = await _sagewire("jobs", "watch", job_id, *target)
    assert code == 0
    assert out.splitlines()[-1].endswith("COMPLETED")
    code, out, err = await _sagewire("jobs", "get", job_id, *target)
    assert (code, json.loads(out), err) == (0, {"a": 1}, "state: COMPLETED\n")

    source = tmp_path / "input.bin"
    source.write_bytes(b"\x00\xff" * 300_000)
    code, upload_id, _ = await _sagewire("jobs", "upload", "echo-async", str(source), *target)
    assert code == 0
    code, _, _ = await _sagewire("jobs", "watch", upload_id.strip(), *target)
    assert code == 0
    out_file = tmp_path / "output.bin"
    code, _, _ = await _sagewire("jobs", "read", upload_id.strip(), *target, "-o", str(out_file))
    assert code == 0
    assert out_file.read_bytes() == source.read_bytes()

    code, _, err = await _sagewire("jobs", "get", "bogus", *target)
    assert code == 1
    assert "INVALID_ARGUMENT" in err


# -- sagewire chat in a real terminal ------------------------------------------------------------


class Tmux:
    """One detached tmux session running a command; keys in, screen text out."""

    def __init__(self, name: str) -> None:
        self.name = name

    def run(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", *args], check=False, capture_output=True, text=True, timeout=10
        )
        return done.stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", self.name, "-S", "-100")

    async def wait_for(self, text: str, within_s: float = 30, after: str = "") -> str:
        """The screen, once `text` shows (below the last `after`, when given)."""
        end = time.monotonic() + within_s
        while time.monotonic() < end:
            screen = await asyncio.to_thread(self.screen)
            screen = screen.rpartition(after)[2] if after else screen
            if text in screen:
                return screen
            await asyncio.sleep(0.1)
        pytest.fail(f"{text!r} never appeared on the terminal:\n{self.screen()}")

    async def keys(self, *keys: str) -> None:
        await asyncio.to_thread(self.run, "send-keys", "-t", self.name, *keys)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
async def test_chat_in_a_terminal_streams_cancels_and_quits(sagewire: Sagewire) -> None:
    tmux = Tmux(f"sagewire-chat-{time.monotonic_ns()}")
    command = " ".join(
        [
            *CLI,
            "chat",
            "tokens",
            "--target",
            sagewire.target,
            "--json",
            "--field",
            "token",
            "; echo EXITED=$?; sleep 60",
        ]
    )
    await asyncio.to_thread(
        tmux.run, "new-session", "-d", "-s", tmux.name, "-x", "200", "-y", "50", command
    )
    try:
        await tmux.wait_for("Ctrl-D quits")
        await tmux.keys('{"text": "hello from the terminal"}', "Enter")
        await tmux.wait_for("hello from the terminal\n")

        # A slow answer: Ctrl-C once the first words are on screen cancels it mid-answer.
        await tmux.keys(
            '{"text": "one two three four five six seven eight", "delay_ms": 400}', "Enter"
        )
        typed = '"delay_ms": 400}'
        await tmux.wait_for("one", after=typed)  # the answer has begun
        await tmux.keys("C-c")
        answer = await tmux.wait_for("[cancelled]", after=typed)
        assert "eight" not in answer  # cut short, not finished

        await tmux.keys('{"text": "still here"}', "Enter")
        await tmux.wait_for("still here\n")
        await tmux.keys("C-d")
        await tmux.wait_for("EXITED=0")
    finally:
        await asyncio.to_thread(tmux.run, "kill-session", "-t", tmux.name)
