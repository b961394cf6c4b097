"""A text stream for log-handler tests that keeps each write apart."""

from __future__ import annotations

import io
import threading


class Writes(io.StringIO):
    """Each write kept apart (what reaches a pipe in one write(2)); `written` is set on each."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []
        self.written = threading.Event()

    def write(self, text: str) -> int:
        self.writes.append(text)
        self.written.set()
        return len(text)
