"""`sagewire chat MODEL`: a Converse session at the terminal.

Each line typed is a turn (plain text; with --json a JSON document; with --json-key K the
object {"K": line}); its answer is printed as it streams. Ctrl-C cancels the answer being
printed (the session stays open) and, at the prompt, only reminds how to quit; Ctrl-D (end of
input) closes the session and exits.

Lines are read by a daemon thread per line (input() blocks), so the event loop keeps streaming
answers and handling Ctrl-C meanwhile, and an ended session never waits on a pending read.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import threading
from typing import IO, Any

from sagewire.client.aio import AsyncClient
from sagewire.client.converse import Turn
from sagewire.client.errors import Cancelled, SagewireError
from sagewire.client.results import Chunk

PROMPT = "> "


def _read_line(loop: asyncio.AbstractEventLoop, done: asyncio.Future[str | None]) -> None:
    try:
        line: str | None = input(PROMPT) if sys.stdin.isatty() else sys.stdin.readline() or None
    except EOFError:
        line = None

    def deliver() -> None:
        if not done.done():
            done.set_result(line)

    loop.call_soon_threadsafe(deliver)


async def _next_line() -> str | None:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[str | None] = loop.create_future()
    threading.Thread(target=_read_line, args=(loop, done), daemon=True).start()
    return await done


def _payload(line: str, json_lines: bool, json_key: str | None) -> Any:
    if json_lines:
        return json.loads(line)
    return {json_key: line} if json_key else line


class _Answer:
    """Prints one turn's chunks: raw text, or one string field of JSON records."""

    def __init__(self, field: str | None, out: IO[str]) -> None:
        self.field, self.out, self.started = field, out, False

    def show(self, chunk: Chunk) -> None:
        text = chunk.text
        if self.field is not None:
            try:
                record: Any = json.loads(chunk.body)
            except ValueError:
                return
            value = record.get(self.field) if isinstance(record, dict) else None
            if not isinstance(value, str):
                return
            text = value if not self.started or value[:1].isspace() else " " + value
        self.started = self.started or bool(text)
        self.out.write(text)
        self.out.flush()

    def finish(self) -> None:
        if self.started:
            self.out.write("\n")
            self.out.flush()


async def chat(
    client: AsyncClient,
    model: str,
    *,
    options: dict[str, Any],
    json_lines: bool,
    json_key: str | None,
    field: str | None,
    out: IO[str] = sys.stdout,
    err: IO[str] = sys.stderr,
) -> None:
    """Runs the session until end of input; raises the session's error if it fails."""
    loop = asyncio.get_running_loop()
    current: Turn | None = None
    cancels: set[asyncio.Task[None]] = set()

    def interrupt() -> None:
        if current is not None and not current.finished:
            task = loop.create_task(current.cancel())
            cancels.add(task)
            task.add_done_callback(cancels.discard)
        else:
            err.write("\n(Ctrl-D quits)\n")
            err.flush()

    async with client.converse(model, options=options) as session:
        err.write(
            f"connected to {model}: each line is a turn; Ctrl-C cancels an answer, Ctrl-D quits\n"
        )
        loop.add_signal_handler(signal.SIGINT, interrupt)
        try:
            while (line := await _next_line()) is not None:
                text = line.rstrip("\n")
                if not text.strip():
                    continue
                try:
                    payload = _payload(text, json_lines, json_key)
                except ValueError as exc:
                    err.write(f"[not JSON: {exc}]\n")
                    continue
                current = await session.send(payload)
                answer = _Answer(field, out)
                try:
                    async for chunk in current:
                        answer.show(chunk)
                    answer.finish()
                except Cancelled:
                    answer.finish()
                    err.write("[cancelled]\n")
                except SagewireError as exc:
                    answer.finish()
                    reason = f" ({exc.reason})" if exc.reason else ""
                    err.write(f"[turn failed: {exc.code.name}{reason}: {exc.message}]\n")
                err.flush()
        finally:
            loop.remove_signal_handler(signal.SIGINT)
