"""The SageMaker stateful session behind one Converse (`converse.sessions` on a route).

Every turn carries the session id: either the route's open request (`converse.open_body`) gets
it before the first turn, or the first turn itself is sent with NEW_SESSION through
InvokeEndpoint (InvokeEndpointWithResponseStream refuses NEW_SESSION) while later turns wait for
the id. A session SageMaker rejects is replaced when `converse.reopen_expired` is on. When the
Converse ends, the route's close request (`converse.close_body`) closes the session; a cancelled
Converse closes it in the background, awaited by `finish_closing` at shutdown.

The id arrives in SageMaker's `X-Amzn-SageMaker-New-Session-Id` header as
`<id>; Expires=<ISO time>` (docs/sagemaker-wire.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from sagewire.config.converse import ConverseSettings
from sagewire.core.converse_events import Outbox, SessionChanged
from sagewire.core.errors import ErrorKind, SagewireError
from sagewire.core.gateway import Gateway
from sagewire.core.types import InvocationOptions, InvokeCall, InvokeResult
from sagewire.core.validation import NEW_SESSION, validate_options

log = logging.getLogger(__name__)

SESSION_NOT_OPENED = "SESSION_NOT_OPENED"
# Close requests still running after their Converse was cancelled (kept from the GC).
_closing: set[asyncio.Task[None]] = set()

# Builds the call for a body: (body, content_type, bounded by the caller's deadline).
type CallFactory = Callable[[bytes, str, bool], InvokeCall]


async def finish_closing() -> None:
    """Wait for the close requests of sessions that were cancelled (each bounded by its route's
    close_timeout_s). Call after the server stopped and before the AWS client closes."""
    await asyncio.sleep(0)  # let just-cancelled sessions schedule theirs
    if _closing:
        await asyncio.gather(*_closing, return_exceptions=True)


def parse_session_header(value: str) -> tuple[str, datetime | None]:
    """SageMaker's NewSessionId, `<id>; Expires=<ISO time>`, as (id, expiry or None)."""
    session_id, *attributes = (part.strip() for part in value.split(";"))
    for attribute in attributes:
        key, _, raw = attribute.partition("=")
        if key.strip().lower() == "expires":
            try:
                expires = datetime.fromisoformat(raw.strip())
            except ValueError:
                return session_id, None
            return session_id, expires if expires.tzinfo else expires.replace(tzinfo=UTC)
    return session_id, None


class StatefulSession:
    """The session id shared by the turns of one Converse, and its open/reopen/close requests.

    `SessionChanged` events go to the Converse's outbox when a turn opens or replaces the session.
    """

    def __init__(
        self,
        gateway: Gateway,
        model: str,
        settings: ConverseSettings,
        make_call: CallFactory,
        outbox: Outbox,
    ) -> None:
        self._gateway = gateway
        self._name = model
        self._settings = settings
        self._make_call = make_call
        self._outbox = outbox
        self.session_id = ""
        self.expires_at: datetime | None = None
        self._lock = asyncio.Lock()
        self._reopen_pending = False

    async def open(self) -> None:
        """The route's open request: InvokeEndpoint with NEW_SESSION before any turn."""
        body = self._settings.open_body.encode()
        result = await self._gateway.invoke(self._make_call(body, "", True), session_id=NEW_SESSION)
        self._learn(result, "the open request (converse.open_body)")

    async def for_turn(self) -> str:
        """The session id a turn is sent with: "" without sessions, the open session's id,
        or NEW_SESSION when this turn opens it (holding the lock until `open_with_turn`
        has the id, so later turns wait for it)."""
        if not self._settings.sessions:
            return ""
        if self.session_id:
            return self.session_id
        await self._lock.acquire()
        opened = self._current()  # by the turn this one waited for
        if opened:
            self._lock.release()
            return opened
        return NEW_SESSION

    def _current(self) -> str:
        return self.session_id

    async def open_with_turn(self, turn_id: str, body: bytes, content_type: str) -> InvokeResult:
        """The first turn opens the session: InvokeEndpoint, on stream routes too. Only after
        `for_turn` answered NEW_SESSION."""
        try:
            call = self._make_call(body, content_type, True)
            result = await self._gateway.invoke(call, session_id=NEW_SESSION)
            self._learn(result, f"turn {turn_id!r}")
        finally:
            self._lock.release()
        self._announce(turn_id)
        return result

    def _learn(self, result: InvokeResult, what: str) -> None:
        session_id, expires = parse_session_header(result.new_session_id)
        problem = "" if session_id else "its answer had no new session id"
        if session_id:
            try:
                validate_options(InvocationOptions(session_id=session_id))
            except SagewireError:
                problem = f"it returned session id {session_id[:80]!r}, which SageMaker refuses"
        if problem:
            raise SagewireError(
                message=f"model {self._name!r} did not open a stateful session for {what}: "
                f"{problem}; check the route's converse settings",
                kind=ErrorKind.FAILED_PRECONDITION,
                reason=SESSION_NOT_OPENED,
                metadata={"model": self._name},
            )
        self.session_id, self.expires_at = session_id, expires

    def _announce(self, turn_id: str) -> None:
        event = SessionChanged(self.session_id, self.expires_at, turn_id, self._reopen_pending)
        self._reopen_pending = False
        self._outbox.put_nowait((event, False))

    async def reopen(self, rejected: str) -> None:
        """Replace a session SageMaker rejected; turns that raced here reuse the new one."""
        async with self._lock:
            if self.session_id != rejected:
                return
            log.info("stateful session on model %r was rejected; reopening", self._name)
            self._reopen_pending = True
            if not self._settings.open_body:
                self.session_id = ""  # the next turn opens it
                return
            await self.open()
            self._announce("")

    async def close(self) -> None:
        """Send the route's close request, best effort (bounded by close_timeout_s)."""
        session_id, self.session_id = self.session_id, ""
        if not session_id or not self._settings.close_body:
            return
        call = self._make_call(self._settings.close_body.encode(), "", False)
        try:
            async with asyncio.timeout(self._settings.close_timeout_s):
                result = await self._gateway.invoke(call, session_id=session_id)
        except Exception as error:  # best effort: the session lapses at its expiry anyway
            log.warning("could not close the stateful session on model %r: %s", self._name, error)
            return
        if result.closed_session_id != session_id:
            log.warning(
                "model %r answered the close request without closing the session", self._name
            )

    def close_later(self) -> None:
        """`close` in a task of its own, for a Converse that may not wait any more."""
        if self.session_id and self._settings.close_body:
            task = asyncio.get_running_loop().create_task(self.close())
            _closing.add(task)
            task.add_done_callback(_closing.discard)
