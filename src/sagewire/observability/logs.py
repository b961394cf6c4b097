"""Log records: text for a terminal (the default) or one JSON object per line
(`server.log_format = "json"`, python-json-logger with orjson), each with the trace and span
ids of the call it belongs to.

JSON lines carry `time`, `level`, `logger`, `message`, `trace_id`, `span_id` (empty outside a
traced call), an `access` object on access records (sagewire.observability.calls) and
`exc_info` on errors. The workers of `serve --workers N` add their process id: `pid` in JSON,
`[pid]` after the level in text. Loggers that print request bodies or signing details at DEBUG
(botocore, the HTTP/2 SDK's smithy layers) are held at INFO or above whatever the level.

Off a terminal (a pipe to a log shipper or container runtime, a file), lines are written in
batches (`BatchedStreamHandler`): an access record per call made one write(2) per call, which
cost more CPU than the rest of observing the call (docs/benchmarks.md, observability).
"""

from __future__ import annotations

import logging
import os
import select
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from opentelemetry import trace
from pythonjsonlogger.orjson import OrjsonFormatter

from sagewire import telemetry
from sagewire.observability.batches import Batch

_NOISY = ("botocore", "smithy_core", "smithy_http", "smithy_aws_core", "smithy_aws_event_stream")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
WORKER_TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s %(message)s"


class TraceContext(logging.Filter):
    """Adds `trace_id` and `span_id` (hex, "" when no span is recording) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "trace_id" not in record.__dict__:  # else named where the record was made
            record.trace_id, record.span_id = current_ids()
        return True


def current_ids() -> tuple[str, str]:
    """The current span's trace and span ids (hex), or ("", "") when no span is recording."""
    if not telemetry.tracing():  # no provider: no span can be recording
        return "", ""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        return format(context.trace_id, "032x"), format(context.span_id, "016x")
    return "", ""


ACCESS_LOGGER = "sagewire.access"


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


class JsonFormatter(OrjsonFormatter):
    """python-json-logger's orjson formatter, with a direct path for access records (one per
    call, so their cost counts: the general path renames and merges fields one by one)."""

    def format(self, record: logging.LogRecord) -> str:
        access = getattr(record, "access", None)
        if access is None or record.exc_info or record.stack_info or isinstance(record.msg, dict):
            return super().format(record)
        # Every JSON line's fields (module doc), and the access record. orjson writes the
        # datetime as isoformat() does (RFC 3339, microseconds unless 0).
        line = {
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "trace_id": getattr(record, "trace_id", ""),
            "span_id": getattr(record, "span_id", ""),
            "time": datetime.fromtimestamp(record.created, tz=UTC),
            "access": access,
        }
        if logging.logProcesses:  # a worker of `serve --workers N`
            line["pid"] = record.process
        return orjson.dumps(line, default=self.json_default).decode()

    def access_line(
        self, message: str, created: float, access: dict[str, object], trace_id: str, span_id: str
    ) -> str:
        """The line `format` gives an AccessRecord with these attributes, made directly."""
        line = {
            "level": "INFO",
            "logger": ACCESS_LOGGER,
            "message": message,
            "trace_id": trace_id,
            "span_id": span_id,
            "time": datetime.fromtimestamp(created, tz=UTC),
            "access": access,
        }
        if logging.logProcesses:
            line["pid"] = os.getpid()
        return orjson.dumps(line, default=self.json_default).decode()


class BatchedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that formats and writes records in batches, not one by one.

    Records wait in memory at most `interval_s` (then a timer on the event loop of the thread
    that logged them writes them out, or a daemon thread off a loop) and are written at once
    when a record of WARNING or above arrives (after those waiting, and after the access
    records of calls that ended before it: the flush hooks' `before_warning`, so the order
    holds), when `MAX_WAITING` wait, on `flush()` and at exit (logging.shutdown). A record is
    formatted when written: its message arguments are read then, as QueueHandler's consumers
    read them. Each write holds whole lines and at most PIPE_BUF bytes, so the workers of
    `serve --workers N`, which share one stderr pipe, never interleave within a line (POSIX:
    pipe writes up to PIPE_BUF are atomic). nginx's `access_log ... buffer= flush=` makes the
    same trade.

    Why: observing a call runs between the rest of the call's work, with the processor's caches
    full of that; formatting an access record there cost several times what it costs in a
    batch, and a write(2) per record more (docs/benchmarks.md, observability). Own code because
    the standard library's MemoryHandler hands records on one by one (a write each again), and
    QueueHandler formats each record before queueing it.
    """

    MAX_WAITING = 256

    def __init__(self, stream: Any = None, interval_s: float = 0.05) -> None:
        super().__init__(stream)
        self.interval_s = interval_s
        self._records: Batch[logging.LogRecord] = Batch(
            self._write, interval_s, self.MAX_WAITING, timer_calls=self.flush
        )
        self._waiting = threading.Event()  # set while records wait for the writer thread
        self._writer_pid = 0

    def emit(self, record: logging.LogRecord) -> None:
        # Called under the handler's lock (Handler.handle), a reentrant one: the hooks below
        # log access records through this handler.
        if record.levelno >= logging.WARNING:
            _before_warning()
            self._records.items.append(record)
            self._records.flush()
        elif not self._records.add(record):  # no event loop in this thread
            # On the event loop's own thread a timer writes (a writer thread would take the
            # GIL from the loop at its own moments, and the calls in flight would wait for it).
            if self._writer_pid != os.getpid():  # a thread does not survive fork
                self._writer_pid = os.getpid()
                threading.Thread(
                    target=self._write_waiting, name="sagewire-log-writer", daemon=True
                ).start()
            self._waiting.set()

    def flush(self) -> None:
        self.acquire()
        try:
            self._records.flush()
            super().flush()
        finally:
            self.release()

    def _write(self, records: list[logging.LogRecord]) -> None:
        """Format and write `records` (the caller holds the handler's lock)."""
        lines: list[str] = []
        for record in records:
            try:
                lines.append(self.format(record) + self.terminator)
            except RecursionError:  # logging's own StreamHandler lets it through too
                raise
            except Exception:
                self.handleError(record)
        self._write_lines(lines, records[-1])

    def _write_lines(self, lines: list[str], record: logging.LogRecord | None) -> None:
        chunk: list[str] = []
        size = 0
        for line in lines:
            # PIPE_BUF counts bytes; lines may be non-ASCII (isascii() reads a flag: no copy).
            length = len(line) if line.isascii() else len(line.encode())
            if chunk and size + length > _PIPE_BUF:
                self._send("".join(chunk), record)
                chunk, size = [], 0
            chunk.append(line)
            size += length
        if chunk:
            self._send("".join(chunk), record)

    def write_lines(self, lines: list[str]) -> None:
        """Write formatted lines (each with its terminator) after the records waiting."""
        self.acquire()
        try:
            self._records.flush()
            self._write_lines(lines, None)
        finally:
            self.release()

    def _send(self, text: str, record: logging.LogRecord | None) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)  # type: ignore[arg-type]  # None: logging prints no record

    def _write_waiting(self) -> None:
        while True:
            self._waiting.wait()
            time.sleep(self.interval_s)  # let a batch gather
            self.acquire()
            try:
                self._waiting.clear()
                self._records.flush()
            finally:
                self.release()


# Linux's 4096; select has it wherever POSIX does.
_PIPE_BUF = getattr(select, "PIPE_BUF", 512)


def json_formatter(pid: bool = False) -> logging.Formatter:
    # `timestamp="time"`: ISO 8601 in UTC with microseconds, under the key "time".
    return JsonFormatter(
        "%(levelname)s %(name)s %(message)s %(trace_id)s %(span_id)s"
        + (" %(process)s" if pid else ""),
        rename_fields={"levelname": "level", "name": "logger", "process": "pid"},
        timestamp="time",
    )


def configure(
    level: str,
    log_format: str = "text",
    stream: Any = None,
    pid: bool = False,
    batched: bool | None = None,
) -> None:
    """Send sagewire's logs to stderr (or `stream`) in `log_format` ("text" or "json");
    `pid`: each record names its process (the workers of `serve --workers N`); `batched`:
    write lines in batches (BatchedStreamHandler; default: on for stderr off a terminal)."""
    # Record attributes no format here shows, skipped per record: the logging HOWTO's
    # "Optimization" list (caller lookup walks the stack; thread, process and task names).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = pid
    logging.logMultiprocessing = False
    logging.logAsyncioTasks = False  # type: ignore[attr-defined]  # Python 3.12+
    if batched is None:
        batched = stream is None and not _is_terminal(sys.stderr)
    handler: logging.StreamHandler[Any] = (
        BatchedStreamHandler(stream or sys.stderr)
        if batched
        else logging.StreamHandler(stream or sys.stderr)
    )
    handler.addFilter(TraceContext())
    text = WORKER_TEXT_FORMAT if pid else TEXT_FORMAT
    handler.setFormatter(json_formatter(pid) if log_format == "json" else TextFormatter(text))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.flush()
    root.addHandler(handler)
    root.setLevel(level)
    floor = max(logging.getLevelName(level), logging.INFO)
    for name in _NOISY:
        logging.getLogger(name).setLevel(floor)


_flush_hooks: list[Callable[[], None]] = []
_warning_hooks: list[Callable[[], None]] = []


def add_flush_hook(
    hook: Callable[[], None], before_warning: Callable[[], None] | None = None
) -> None:
    """`hook()` runs first in every `flush()`: records made later than logged (access
    records, sagewire.observability.calls) reach the handlers before they are flushed.
    `before_warning()` runs before a batched handler writes a WARNING or worse line, so the
    records of what happened before it come first (it must only log, at INFO)."""
    _flush_hooks.append(hook)
    if before_warning is not None:
        _warning_hooks.append(before_warning)


def _before_warning() -> None:
    for hook in _warning_hooks:
        try:
            hook()
        except Exception:  # the WARNING line itself must still be written
            logging.getLogger("sagewire").exception("writing waiting records failed")


def flush() -> None:
    """Log and write every record still waiting (a process about to end without
    logging.shutdown, e.g. a multiprocessing child, which leaves by os._exit)."""
    for hook in _flush_hooks:
        hook()
    for handler in logging.getLogger().handlers:
        handler.flush()


def json_access_handler(
    logger: logging.Logger,
) -> tuple[BatchedStreamHandler, JsonFormatter] | None:
    """The one handler INFO records of `logger` reach and its formatter, when it is a
    BatchedStreamHandler writing JSON and nothing on the way filters or changes records but
    TraceContext (the configuration `configure` makes): access records can then be written
    as lines (`JsonFormatter.access_line`) without a LogRecord each. Else None."""
    if logger.disabled or not logger.isEnabledFor(logging.INFO):
        return None
    found: BatchedStreamHandler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        for handler in current.handlers:
            if handler.level > logging.INFO:
                continue
            if found is not None or not isinstance(handler, BatchedStreamHandler):
                return None
            if any(not isinstance(f, TraceContext) for f in handler.filters):
                return None
            found = handler
        current = current.parent if current.propagate else None
    if found is None or not isinstance(found.formatter, JsonFormatter):
        return None
    return found, found.formatter


def write_batched() -> None:
    """Write what the root logger's batched handlers hold, now: records that already waited
    for a batch of their own (access records, sagewire.observability.calls) wait no twice."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, BatchedStreamHandler):
            handler.flush()


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
