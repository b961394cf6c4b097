"""Settings of Converse sessions on a route (`[routes.<name>.converse]`).

Every field is documented in docs/configuration.md; the protocol and state machine in
docs/converse.md.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from sagewire.config.base import Strict


class ConverseSettings(Strict):
    """How Converse sessions behave on a route."""

    # Turns of one session that may call the model at once; 1 runs them strictly in order.
    max_concurrent_turns: int = Field(default=1, ge=1, le=64)
    # Turns accepted but waiting for a free slot; more are refused in-band.
    max_queued_turns: int = Field(default=16, ge=0, le=1024)
    # Answer chunks waiting for a slow reader before turns stop reading from the model.
    max_buffered_chunks: int = Field(default=32, ge=1, le=10_000)
    # Turns per session; later turns are refused in-band.
    max_turns: int = Field(default=1000, ge=1, le=1_000_000)
    # Session ends when nothing happened for this long (no message, no turn running).
    idle_timeout_s: float = Field(default=300.0, gt=0, le=86_400)
    # Session ends this long after it opened, whatever is running.
    max_duration_s: float = Field(default=3600.0, gt=0, le=86_400)

    # SageMaker stateful sessions: every turn reaches the same model instance.
    sessions: bool = False
    # Body of the request that opens the session (InvokeEndpoint, SessionId NEW_SESSION) before
    # any turn; empty: the first turn itself is sent with NEW_SESSION.
    open_body: str = ""
    # Body of the request that closes the session when the Converse ends; empty: none is sent
    # and the session lapses when SageMaker expires it.
    close_body: str = ""
    # Longest wait for the close request; the stream has ended by then, so it only bounds work.
    close_timeout_s: float = Field(default=5.0, gt=0, le=70)
    # When SageMaker rejects the session (expired, closed), open a new one and retry the turn
    # instead of ending the Converse.
    reopen_expired: bool = False

    @model_validator(mode="after")
    def _session_keys_need_sessions(self) -> ConverseSettings:
        if not self.sessions:
            for key in ("open_body", "close_body", "reopen_expired"):
                if getattr(self, key):
                    raise ValueError(f"{key} needs sessions = true")
        return self
