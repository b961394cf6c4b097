"""Workers name their process in every log record (`logs.configure(..., pid=True)`), in both
formats and on the access records' direct JSON path; a single process does not."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator

import pytest

from sagewire.observability import logs


@pytest.fixture(autouse=True)
def _restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level, processes = list(root.handlers), root.level, logging.logProcesses
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.logProcesses = processes


def _lines(log_format: str, pid: bool) -> list[str]:
    stream = io.StringIO()
    logs.configure("INFO", log_format, stream, pid=pid)
    logging.getLogger("sagewire.test").info("plain record")
    logging.getLogger("sagewire.access").info("a call", extra={"access": {"status": "OK"}})
    return stream.getvalue().splitlines()


def test_json_records_carry_the_pid_in_a_worker() -> None:
    records = [json.loads(line) for line in _lines("json", pid=True)]
    assert [r["pid"] for r in records] == [os.getpid(), os.getpid()]
    assert records[1]["access"] == {"status": "OK"}


def test_text_records_carry_the_pid_in_a_worker() -> None:
    for line in _lines("text", pid=True):
        assert f" INFO [{os.getpid()}] sagewire." in line


def test_a_single_process_logs_no_pid() -> None:
    assert all("pid" not in json.loads(line) for line in _lines("json", pid=False))
    assert all(f"[{os.getpid()}]" not in line for line in _lines("text", pid=False))
