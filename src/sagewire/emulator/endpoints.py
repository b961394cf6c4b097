"""Live emulator state: each configured endpoint with its model, current fault and stats.

Why: the config is immutable data; tests need to flip faults and read counters while the server
runs. ``EmulatorState`` is that one mutable place, shared by the HTTP handlers and the
``running_emulator`` handle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import aiohttp

from sagewire.emulator import errors
from sagewire.emulator.config import EmulatorConfig, EndpointConfig
from sagewire.emulator.container import ContainerModel
from sagewire.emulator.fault_run import ActiveFault
from sagewire.emulator.faults import Fault
from sagewire.emulator.model_api import Model
from sagewire.emulator.models import BUILTIN_MODELS
from sagewire.emulator.sessions import SessionTable
from sagewire.emulator.stats import EndpointStats

HEALTHY = Fault()


@dataclass
class Endpoint:
    name: str
    config: EndpointConfig
    model: Model
    active: ActiveFault  # the fault in effect, with its clock, call count and draws
    stats: EndpointStats
    # Stateful sessions its model opened and has not closed (SageMaker's routing memory).
    sessions: SessionTable = field(default_factory=SessionTable)

    @property
    def fault(self) -> Fault:
        return self.active.fault

    def set_fault(self, fault: Fault | None) -> None:
        """``fault`` (None = healthy) takes effect now: cold windows and call counts restart."""
        self.active = ActiveFault(fault or HEALTHY)

    def variant(self, requested: str | None) -> str:
        """The production variant a call reaches: the requested one, or the first."""
        variants = self.config.variants
        if requested is None:
            return variants[0]
        if requested not in variants:
            raise errors.validation_error(
                f"Target variant {requested} not found for endpoint {self.name} "
                f"of account {errors.ACCOUNT_ID}."
            )
        return requested


class EmulatorState:
    """All endpoints by name. Create it inside a running event loop (it owns an HTTP session
    for container-backed endpoints); ``close()`` it when done."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.http = aiohttp.ClientSession()
        self.endpoints = {
            name: Endpoint(
                name, cfg, self._model(cfg), ActiveFault(cfg.fault or HEALTHY), EndpointStats()
            )
            for name, cfg in config.endpoints.items()
        }

    def _model(self, cfg: EndpointConfig) -> Model:
        if cfg.container_url is not None:
            return ContainerModel(cfg.container_url, self.http, cfg.container_timeout_s)
        assert cfg.model is not None  # guaranteed by EndpointConfig
        return BUILTIN_MODELS[cfg.model]()

    def get(self, name: str) -> Endpoint:
        try:
            return self.endpoints[name]
        except KeyError:
            known = ", ".join(sorted(self.endpoints))
            raise KeyError(f"no emulated endpoint {name!r}; endpoints: {known}") from None

    def set_fault(self, name: str, fault: Fault | None) -> None:
        """Replace the endpoint's fault (None = healthy) for calls that start from now on."""
        self.get(name).set_fault(fault)

    def reset(self) -> None:
        """Restore every configured fault and start fresh stats (in-flight streams keep
        updating the stats object they started with)."""
        for endpoint in self.endpoints.values():
            endpoint.set_fault(endpoint.config.fault)
            endpoint.stats = EndpointStats()
            endpoint.sessions = SessionTable()

    def all_stats(self) -> dict[str, dict[str, int]]:
        return {name: ep.stats.as_dict() for name, ep in sorted(self.endpoints.items())}

    async def close(self) -> None:
        await self.http.close()
