"""Log records: text for a terminal (the default) or one JSON object per line
(`server.log_format = "json"`, python-json-logger), each with the trace and span ids of the
call it belongs to.

JSON lines carry `time`, `level`, `logger`, `message`, `trace_id`, `span_id` (empty outside a
traced call), an `access` object on access records (sagewire.observability.calls) and
`exc_info` on errors. The workers of `serve --workers N` add their process id: `pid` in JSON,
`[pid]` after the level in text. Loggers that print request bodies or signing details at DEBUG
(botocore, the HTTP/2 SDK's smithy layers) are held at INFO or above whatever the level.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter

from sagewire import telemetry

_NOISY = ("botocore", "smithy_core", "smithy_http", "smithy_aws_core", "smithy_aws_event_stream")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
WORKER_TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s %(message)s"


class TraceContext(logging.Filter):
    """Adds `trace_id` and `span_id` (hex, "" when no span is recording) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not telemetry.tracing():  # no provider: no span can be recording
            record.trace_id = record.span_id = ""
            return True
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = format(context.trace_id, "032x")
            record.span_id = format(context.span_id, "016x")
        else:
            record.trace_id = record.span_id = ""
        return True


class TextFormatter(logging.Formatter):
    """The text format, with ` trace_id=… span_id=…` appended inside a traced call."""

    _second = -1
    _stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """logging's own rendering, with time.strftime done once per second rather than per
        record (an access record per call makes it count)."""
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime(self.default_time_format, self.converter(record.created))
        return f"{self._stamp},{int(record.msecs):03d}"  # logging's default_msec_format

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        trace_id = getattr(record, "trace_id", "")
        if trace_id:
            line += f" trace_id={trace_id} span_id={getattr(record, 'span_id', '')}"
        return line


class _JsonFormatter(JsonFormatter):
    """python-json-logger, with a direct path for access records (one per call, so their
    cost counts: the general path renames and merges fields one by one, then serialises with
    its own encoder class)."""

    def format(self, record: logging.LogRecord) -> str:
        access = getattr(record, "access", None)
        if access is None or record.exc_info or record.stack_info or isinstance(record.msg, dict):
            return super().format(record)
        # Every JSON line's fields (module doc), and the access record.
        line = {
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "trace_id": getattr(record, "trace_id", ""),
            "span_id": getattr(record, "span_id", ""),
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(),
            "access": access,
        }
        if logging.logProcesses:  # a worker of `serve --workers N`
            line["pid"] = record.process
        return json.dumps(line)


def json_formatter(pid: bool = False) -> logging.Formatter:
    # `timestamp="time"`: ISO 8601 in UTC with microseconds, under the key "time".
    return _JsonFormatter(
        "%(levelname)s %(name)s %(message)s %(trace_id)s %(span_id)s"
        + (" %(process)s" if pid else ""),
        rename_fields={"levelname": "level", "name": "logger", "process": "pid"},
        timestamp="time",
    )


def configure(level: str, log_format: str = "text", stream: Any = None, pid: bool = False) -> None:
    """Send sagewire's logs to stderr (or `stream`) in `log_format` ("text" or "json");
    `pid`: each record names its process (the workers of `serve --workers N`)."""
    # Record attributes no format here shows, skipped per record: the logging HOWTO's
    # "Optimization" list (caller lookup walks the stack; thread, process and task names).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = pid
    logging.logMultiprocessing = False
    logging.logAsyncioTasks = False  # type: ignore[attr-defined]  # Python 3.12+
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(TraceContext())
    text = WORKER_TEXT_FORMAT if pid else TEXT_FORMAT
    handler.setFormatter(json_formatter(pid) if log_format == "json" else TextFormatter(text))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    floor = max(logging.getLevelName(level), logging.INFO)
    for name in _NOISY:
        logging.getLogger(name).setLevel(floor)
