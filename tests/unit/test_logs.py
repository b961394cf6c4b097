"""The log formatters' direct paths give what the general ones would."""

from __future__ import annotations

import io
import json
import logging
import select

import pytest
from write_capture import Writes

from sagewire.observability import logs


def _record(created: float, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord(
        "sagewire.access", logging.INFO, "", 0, "%s -> %s", ("a", "OK"), None
    )
    record.created = created
    record.msecs = (created - int(created)) * 1000
    record.__dict__.update(extra)
    return record


@pytest.mark.parametrize(
    "times", [[1.0, 1.5, 1.999, 2.0], [1700000000.0005, 1700000000.9999, 1700000001.25]]
)
def test_text_time_is_logging_s_own_also_within_one_second(times: list[float]) -> None:
    ours = logs.TextFormatter(logs.TEXT_FORMAT)
    standard = logging.Formatter(logs.TEXT_FORMAT)
    for created in times:
        record = _record(created)
        assert ours.format(record) == standard.format(record)
    assert ours.formatTime(_record(3.0), "%H") == standard.formatTime(_record(3.0), "%H")


def test_a_json_access_record_is_one_object_with_every_field() -> None:
    stream = io.StringIO()
    logs.configure("INFO", "json", stream)
    access = {"method": "m", "model": "echo", "status": "OK", "bytes_in": 3}
    try:
        logging.getLogger("sagewire.access").info("%s -> %s", "m", "OK", extra={"access": access})
        logging.getLogger("sagewire.other").warning("plain %d", 1)
    finally:
        logs.configure("WARNING")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first.pop("time").endswith("+00:00")
    assert first == {
        "level": "INFO",
        "logger": "sagewire.access",
        "message": "m -> OK",
        "trace_id": "",
        "span_id": "",
        "access": access,
    }
    # Other records take python-json-logger's general path: the same fields.
    assert second.keys() >= {"time", "level", "logger", "message", "trace_id", "span_id"}
    assert (second["level"], second["logger"], second["message"]) == (
        "WARNING",
        "sagewire.other",
        "plain 1",
    )


def _batched(
    interval_s: float = 3600.0,
) -> tuple[logging.Logger, Writes, logs.BatchedStreamHandler]:
    stream = Writes()
    handler = logs.BatchedStreamHandler(stream, interval_s)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger(f"sagewire.test.batched.{id(handler)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return logger, stream, handler


def test_batched_lines_wait_then_go_out_in_one_write() -> None:
    logger, stream, _ = _batched(interval_s=0.05)
    for n in range(5):
        logger.info("line %d", n)
    assert stream.written.wait(30)  # the writer thread, once the interval passed
    assert stream.writes == ["".join(f"INFO line {n}\n" for n in range(5))]


def test_a_warning_writes_what_waits_first_and_itself_at_once() -> None:
    logger, stream, handler = _batched()
    logger.info("one")
    logger.info("two")
    assert stream.writes == []
    logger.warning("three")
    assert stream.writes == ["INFO one\nINFO two\nWARNING three\n"]
    logger.info("four")
    handler.flush()  # logging.shutdown at exit, logs.flush in a worker
    assert stream.writes[1:] == ["INFO four\n"]


def test_each_write_holds_whole_lines_and_at_most_pipe_buf_bytes() -> None:
    logger, stream, handler = _batched()
    line = "x" * 300
    for _ in range(100):
        logger.info(line)
    handler.flush()
    assert "".join(stream.writes) == f"INFO {line}\n" * 100
    assert len(stream.writes) > 1
    for write in stream.writes:
        assert len(write.encode()) <= select.PIPE_BUF
        assert write.endswith("\n")


def test_stderr_off_a_terminal_is_batched_and_a_given_stream_is_not() -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        logs.configure("INFO", "json")  # pytest's stderr is no terminal
        assert isinstance(root.handlers[0], logs.BatchedStreamHandler)
        logs.configure("INFO", "json", io.StringIO())
        assert not isinstance(root.handlers[0], logs.BatchedStreamHandler)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
