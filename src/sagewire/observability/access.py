"""Access records: one line per call, made from the call's entry when its batch is applied
(sagewire.observability.calls), with the call's end as its time and its trace ids.

Never payloads, metadata values or tokens: only names, the status, sizes and the duration.
When sagewire's own JSON handler is the only one a record would reach (as `sagewire serve`
configures logging), records are written as JSON lines directly, without a LogRecord and the
logging module's dispatch per call (the same lines); otherwise each is an `AccessRecord` logged
on `sagewire.access`.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Sequence
from typing import Protocol

from sagewire.observability.logs import (
    ACCESS_LOGGER,
    BatchedStreamHandler,
    JsonFormatter,
    json_access_handler,
    write_batched,
)


class Call(Protocol):
    """What an access record reads of a finished call (sagewire.observability.calls.Call)."""

    @property
    def method(self) -> str: ...

    model: str
    code: str
    reason: str
    bytes_in: int
    bytes_out: int
    principal: str
    http_status: int
    duration: float
    ended: float  # time.time(); 0.0: no record asked for
    trace_id: str
    span_id: str


access_log = logging.getLogger(ACCESS_LOGGER)


def write_records(finished: Sequence[Call]) -> None:
    """The access records of the finished calls that asked for one (`Call.ended` set)."""
    direct = json_access_handler(access_log)
    if direct is not None:
        _write_access_lines(finished, *direct)
        return
    for call in finished:
        if not call.ended:  # not logged when the call ended
            continue
        try:
            _access_record(call)
        except Exception:  # one bad record must not lose the rest of the batch
            logging.getLogger("sagewire").exception("an access record failed: %s", call.method)
    write_batched()


# What logging.LogRecord.__init__ sets that is the same for every access record.
_ACCESS_CONSTANT = {
    "name": ACCESS_LOGGER,
    "levelname": "INFO",
    "levelno": logging.INFO,
    "pathname": "(unknown file)",
    "filename": "(unknown file)",
    "module": "Unknown module",
    "exc_info": None,
    "exc_text": None,
    "stack_info": None,
    "lineno": 0,
    "funcName": None,
    "taskName": None,
}


class AccessRecord(logging.LogRecord):
    """A LogRecord of logger `sagewire.access` at INFO with an `access` object, made directly.

    Built in a batch after the call ended (sagewire.observability.calls), with the call's end
    as its time and its trace ids. LogRecord.__init__ would spend most of its time on what is
    the same for every access record (the file name split, the level name lookup), so the
    constant attributes are copied in one step; the rest are set as LogRecord sets them
    (threads, processes per the logging module's flags). A factory installed with
    logging.setLogRecordFactory is not used for these records."""

    def __init__(
        self,
        msg: str,
        args: tuple[object, ...],
        created: float,
        access: dict[str, object],
        trace_id: str,
        span_id: str,
    ) -> None:
        self.__dict__.update(_ACCESS_CONSTANT)
        self.msg = msg
        self.args = args
        self.created = created
        self.msecs = int((created - int(created)) * 1000) + 0.0
        self.relativeCreated = (created - logging._startTime) * 1000  # type: ignore[attr-defined]
        if logging.logThreads:
            self.thread: int | None = threading.get_ident()
            self.threadName: str | None = threading.current_thread().name
        else:
            self.thread = self.threadName = None
        self.processName = _process_name() if logging.logMultiprocessing else None
        self.process = os.getpid() if logging.logProcesses else None
        self.access = access
        self.trace_id = trace_id
        self.span_id = span_id


def _process_name() -> str:
    found = sys.modules.get("multiprocessing")  # as LogRecord names it
    return found.current_process().name if found is not None else "MainProcess"


def _write_access_lines(
    finished: Sequence[Call], handler: BatchedStreamHandler, formatter: JsonFormatter
) -> None:
    """The access records of `finished` as JSON lines, straight to the one handler that would
    write them (logs.json_access_handler): the same lines, without a LogRecord and the logging
    module's dispatch per call."""
    lines = []
    for call in finished:
        if not call.ended:
            continue
        try:
            access, args = _access_fields(call)
            message = (  # _ACCESS_MESSAGE % args, as an f-string (faster)
                f"{args[0]} model={args[1]} -> {args[2]}{args[3]} in {args[4]:.1f} ms "
                f"({args[5]:d} B in, {args[6]:d} B out)"
            )
            line = formatter.access_line(message, call.ended, access, call.trace_id, call.span_id)
        except Exception:
            logging.getLogger("sagewire").exception("an access record failed: %s", call.method)
            continue
        lines.append(line + handler.terminator)
    if lines:
        handler.write_lines(lines)


def _access_fields(call: Call) -> tuple[dict[str, object], tuple[object, ...]]:
    """The access object and message arguments of one call's record."""
    duration = call.duration
    access: dict[str, object] = {
        "method": call.method,
        "model": call.model,
        "status": call.code,
        "reason": call.reason,
        "duration_ms": round(duration * 1e3, 3),
        "bytes_in": call.bytes_in,
        "bytes_out": call.bytes_out,
    }
    if call.http_status:
        access["http_status"] = call.http_status
    if call.principal:
        access["principal"] = call.principal
    args = (
        call.method or "-",  # "-": a request no route matched
        call.model or "-",
        call.code,
        f" ({call.reason})" if call.reason else "",
        duration * 1e3,
        call.bytes_in,
        call.bytes_out,
    )
    return access, args


def _access_record(call: Call) -> None:
    """One line per call: never payloads, metadata values or tokens (only sizes and names)."""
    access, args = _access_fields(call)
    access_log.handle(
        AccessRecord(_ACCESS_MESSAGE, args, call.ended, access, call.trace_id, call.span_id)
    )


_ACCESS_MESSAGE = "%s model=%s -> %s%s in %.1f ms (%d B in, %d B out)"
