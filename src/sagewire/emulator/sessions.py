"""SageMaker stateful sessions, as the router in front of a model sees them.

Why: with stateful sessions the *model* creates a session (answering a ``NEW_SESSION`` call
with ``X-Amzn-SageMaker-New-Session-Id: <id>; Expires=<time>``) and closes it (answering with
``X-Amzn-SageMaker-Closed-Session-Id``); SageMaker remembers which ids are live and sends every
later call with such an id to the same instance. This module is that memory for one endpoint:
ids learnt from model replies, checked (unknown or expired → ValidationError) before a call
reaches the model. The model keeps its own per-session state (see ``models.ChatModel``).

How real SageMaker words the rejection is unconfirmed; the emulator answers 400
ValidationError with a message naming the session.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sagewire.emulator import errors

NEW_SESSION = "NEW_SESSION"
DEFAULT_TTL_S = 20 * 60.0


def new_session_header(ttl_s: float = DEFAULT_TTL_S, now: float | None = None) -> tuple[str, str]:
    """A fresh session id and the header value a model answers with: ``<id>; Expires=<time>``."""
    session_id = uuid.uuid4().hex
    expires = datetime.fromtimestamp((time.time() if now is None else now) + ttl_s, UTC)
    return session_id, f"{session_id}; Expires={expires.strftime('%Y-%m-%dT%H:%M:%SZ')}"


def parse_new_session(value: str) -> tuple[str, float | None]:
    """``<id>; Expires=<ISO time>`` → (id, expiry as a Unix time, or None when absent)."""
    session_id, *attributes = (part.strip() for part in value.split(";"))
    for attribute in attributes:
        key, _, raw = attribute.partition("=")
        if key.strip().lower() == "expires":
            try:
                return session_id, datetime.fromisoformat(raw.strip()).timestamp()
            except ValueError:
                return session_id, None
    return session_id, None


@dataclass
class SessionCounters:
    opened: int = 0
    closed: int = 0
    rejected: int = 0


class SessionTable:
    """Live stateful sessions of one endpoint: id → expiry (Unix time, None = never)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._live: dict[str, float | None] = {}
        self.counters = SessionCounters()

    def learn(self, header_value: str) -> str:
        """Record a session a model opened (its New-Session-Id header); returns the id."""
        session_id, expires = parse_new_session(header_value)
        if len(self._live) % 1024 == 1023:  # sessions nobody closed must not pile up
            self._live = {s: e for s, e in self._live.items() if e is None or e > self._clock()}
        self._live[session_id] = expires
        self.counters.opened += 1
        return session_id

    def forget(self, session_id: str) -> None:
        """The model closed the session (its Closed-Session-Id header)."""
        if self._live.pop(session_id, False) is not False:
            self.counters.closed += 1

    def check(self, endpoint: str, session_id: str) -> None:
        """Raise the ValidationError SageMaker answers for an unknown or expired session."""
        if session_id not in self._live:
            self.counters.rejected += 1
            raise errors.validation_error(
                f"Invalid session ID: session {session_id} of endpoint {endpoint} does not "
                "exist or was closed."
            )
        expires = self._live[session_id]
        if expires is not None and expires <= self._clock():
            del self._live[session_id]
            self.counters.rejected += 1
            raise errors.validation_error(
                f"Invalid session ID: session {session_id} of endpoint {endpoint} has expired."
            )

    def expire(self, session_id: str) -> None:
        """Make a live session expired now (for tests of expiry handling)."""
        if session_id in self._live:
            self._live[session_id] = self._clock() - 1

    def is_live(self, session_id: str) -> bool:
        expires = self._live.get(session_id, 0.0)
        return session_id in self._live and (expires is None or expires > self._clock())

    def live_ids(self) -> list[str]:
        return [s for s in self._live if self.is_live(s)]
