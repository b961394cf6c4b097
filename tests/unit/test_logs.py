"""The log formatters' direct paths give what the general ones would."""

from __future__ import annotations

import io
import json
import logging

import pytest

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
