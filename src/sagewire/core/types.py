"""Plain data passed between the transports, the core and the AWS adapter."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Literal

from sagewire.config.settings import RouteMode, StreamFraming


@dataclass(frozen=True, slots=True)
class InvocationOptions:
    """Per-call SageMaker options; an empty string means "not set"."""

    custom_attributes: str = ""
    target_variant: str = ""
    target_model: str = ""
    inference_component: str = ""
    target_container_hostname: str = ""
    inference_id: str = ""
    session_id: str = ""
    enable_explanations: str = ""

    def set_fields(self) -> list[str]:
        """Names of the options that carry a value, in declaration order."""
        return [name for name in _OPTION_NAMES if getattr(self, name)]

    def over(self, base: InvocationOptions) -> InvocationOptions:
        """These options, falling back to `base` for each one left empty."""
        names = self.set_fields()
        if not names:  # most calls set none: `base` itself, no copy
            return base
        return replace(base, **{name: getattr(self, name) for name in names})


# dataclasses.fields() builds its tuple on every call; on the hot path of every invocation.
_OPTION_NAMES = tuple(f.name for f in fields(InvocationOptions))


@dataclass(frozen=True, slots=True)
class InvokeCall:
    """A caller's request, before route resolution."""

    model: str
    body: bytes
    content_type: str = ""
    accept: str = ""
    options: InvocationOptions = field(default_factory=InvocationOptions)
    # Seconds left before the caller's deadline; None when the caller set none.
    time_remaining_s: float | None = None
    framing: StreamFraming | None = None


@dataclass(frozen=True, slots=True)
class EndpointRequest:
    """A validated request, ready for the SageMaker adapter."""

    endpoint: str
    body: bytes
    content_type: str
    accept: str
    options: InvocationOptions


@dataclass(frozen=True, slots=True)
class InvokeResult:
    """What a real-time invocation returned."""

    body: bytes
    content_type: str
    invoked_variant: str = ""
    custom_attributes: str = ""
    new_session_id: str = ""
    closed_session_id: str = ""
    # The SageMaker endpoint that answered: the route's own or one of its fallbacks.
    endpoint: str = ""


@dataclass(frozen=True, slots=True)
class StreamStart:
    """Response metadata of a streaming invocation, known before the first part."""

    content_type: str
    invoked_variant: str = ""
    # The SageMaker endpoint that answered: the route's own or one of its fallbacks.
    endpoint: str = ""


@dataclass(frozen=True, slots=True)
class RouteInfo:
    """A route as callers see it (ModelService)."""

    name: str
    mode: RouteMode
    endpoint: str
    description: str
    content_type: str
    accept: str
    framing: StreamFraming
    timeout_s: float
    allowed_options: tuple[str, ...]
    # custom_attributes is always empty: see default_custom_attributes.
    defaults: InvocationOptions
    # The route's default CustomAttributes, redacted (core.redaction); "" when none.
    default_custom_attributes: str = ""
    # The endpoints the route tries in order (its own, then fallbacks) with their circuits.
    endpoints: tuple[EndpointView, ...] = ()
    # Admission in this process (sagewire.core.admission): static cap, limit now, in flight.
    max_concurrency: int = 0
    concurrency_limit: int = 0
    in_flight: int = 0
    adaptive: bool = False


@dataclass(frozen=True, slots=True)
class EndpointView:
    """One endpoint a route calls and its circuit breaker (sagewire.core.circuit_breaker)."""

    endpoint: str
    target_variant: str  # "" = the caller's or the route's default
    fallback: bool
    circuit_state: str  # closed, open, half_open
    consecutive_failures: int
    half_open_in_s: float  # seconds until an open circuit half-opens; 0 otherwise


# -- bidirectional streams (InvokeEndpointWithBidirectionalStream) ----------------------------

BidiDataType = Literal["UTF8", "BINARY"]


@dataclass(frozen=True, slots=True)
class BidiPart:
    """One PayloadPart of a bidirectional stream, either direction.

    `data_type` says how the model should read the bytes (UTF8 text/JSON, or BINARY); `partial`
    False marks the last part of a turn (CompletionState COMPLETE).
    """

    data: bytes
    data_type: BidiDataType = "UTF8"
    partial: bool = True


@dataclass(frozen=True, slots=True)
class BidiRequest:
    """A validated request to open InvokeEndpointWithBidirectionalStream; "" = not sent."""

    endpoint: str
    target_variant: str = ""
    model_invocation_path: str = ""
    model_query_string: str = ""


@dataclass(frozen=True, slots=True)
class BidiStart:
    """Response metadata of a bidirectional stream, known before its first part."""

    invoked_variant: str = ""
