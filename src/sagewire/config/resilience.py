"""Settings of a route's resilience: circuit breaker, cold-start waits and fallback endpoints.

Every field is documented in docs/configuration.md and docs/resilience.md:
`[routes.<name>.circuit_breaker]`, `[routes.<name>.cold_start]` and
`fallbacks = ["endpoint-b", {endpoint = "endpoint-c", target_variant = "B"}]`.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints, model_validator

from sagewire.config.base import Strict

_ENDPOINT = r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$"
EndpointName = Annotated[str, StringConstraints(max_length=63, pattern=_ENDPOINT)]
# "" = not set.
VariantName = Annotated[str, StringConstraints(max_length=63, pattern=r"^$|" + _ENDPOINT)]


class CircuitBreakerSettings(Strict):
    """One breaker per endpoint a route calls (its own and each fallback)."""

    # Off: every call reaches SageMaker whatever happened before.
    enabled: bool = True
    # Consecutive upstream failures of retryable kinds that open the circuit.
    failure_threshold: int = Field(default=5, ge=1, le=10_000)
    # How long an open circuit fails calls fast before letting probe calls through.
    open_s: float = Field(default=10.0, gt=0, le=3600)
    # Probe calls let through at once while half-open; that many successes close the circuit,
    # one failure opens it again.
    half_open_probes: int = Field(default=1, ge=1, le=100)


class ColdStartSettings(Strict):
    """Waiting for an endpoint that answers ModelNotReadyException (loading, scaling from 0)."""

    # Off: ModelNotReadyException reaches the caller at once (UNAVAILABLE, MODEL_NOT_READY).
    enabled: bool = True
    # The most one call waits for the model in total, whatever the caller's deadline allows.
    max_wait_s: float = Field(default=60.0, ge=0, le=3600)
    # Exponential backoff between attempts, with full jitter: attempt n waits a random time in
    # [0, min(max_backoff_s, initial_backoff_s * 2**n)], at least min_backoff_s.
    initial_backoff_s: float = Field(default=0.5, gt=0, le=60)
    max_backoff_s: float = Field(default=5.0, gt=0, le=300)
    min_backoff_s: float = Field(default=0.1, ge=0, le=60)

    @model_validator(mode="after")
    def _ordered(self) -> ColdStartSettings:
        if not self.min_backoff_s <= self.initial_backoff_s <= self.max_backoff_s:
            raise ValueError("need min_backoff_s <= initial_backoff_s <= max_backoff_s")
        return self


class FallbackSettings(Strict):
    """Another endpoint serving the same model, tried when the route's own cannot answer.

    No region: sagewire holds one SageMaker Runtime client, for aws.region; an endpoint in
    another region would need a client (and credentials) of its own.
    """

    endpoint: EndpointName
    # The production variant to call there; "" = SageMaker's weighted choice. The caller's
    # target_variant names a variant of the route's own endpoint, so it is never sent here.
    target_variant: VariantName = ""

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, value: object) -> object:
        # `fallbacks = ["endpoint-b"]`: a bare string is the endpoint.
        return {"endpoint": value} if isinstance(value, str) else value
