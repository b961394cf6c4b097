"""The route table: logical model names → endpoint, mode, defaults and per-call policy."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace

from sagewire.config.operations import OPTIONS, PARAMETERS, Operation, takes
from sagewire.config.settings import RouteMode, RouteSettings, StreamFraming
from sagewire.core.admission import Admission, Admitted
from sagewire.core.errors import SagewireError, invalid_argument, model_not_found
from sagewire.core.ports import OpenGuard, RouteGuard
from sagewire.core.redaction import redact_custom_attributes
from sagewire.core.types import InvocationOptions, RouteInfo
from sagewire.observability import calls
from sagewire.observability.metrics import PASSTHROUGH

# `model = "endpoint/<name>"` reaches an endpoint directly when pass-through is enabled.
PASSTHROUGH_PREFIX = "endpoint/"


@dataclass
class Route:
    """One resolved route, with its admission (concurrency limit, in-flight calls)."""

    name: str
    settings: RouteSettings
    defaults: InvocationOptions
    allowed: frozenset[str]
    # The route's name in metrics and access records: pass-through routes share one label,
    # since their names come from callers.
    label: str = ""

    admission: Admission = field(init=False)

    def __post_init__(self) -> None:
        self.label = self.label or self.name
        self.admission = Admission(self.name, self.settings)

    @property
    def mode(self) -> RouteMode:
        return self.settings.mode

    def info(self) -> RouteInfo:
        s = self.settings
        return RouteInfo(
            name=self.name,
            mode=s.mode,
            endpoint=s.endpoint,
            description=s.description,
            content_type=s.content_type,
            accept=s.accept,
            framing=s.framing,
            timeout_s=s.timeout_s,
            allowed_options=tuple(sorted(self.allowed)),
            # Every caller may read this: defaults that may hold credentials are redacted.
            defaults=replace(self.defaults, custom_attributes=""),
            default_custom_attributes=redact_custom_attributes(self.defaults.custom_attributes),
            max_concurrency=s.max_concurrency,
            concurrency_limit=self.admission.limit,
            in_flight=self.admission.in_flight,
            adaptive=self.admission.limiter is not None,
        )

    def check_allowed(self, options: InvocationOptions, operation: Operation) -> None:
        """Refuse, naming the field, an option `operation` has no parameter for
        (OPTION_NOT_SUPPORTED), then one the route does not let callers set
        (OPTION_NOT_ALLOWED)."""
        names = options.set_fields()
        for name in names:
            if name not in OPTIONS[operation]:
                raise not_supported(f"options.{name}", operation)
        for name in names:
            if name not in self.allowed:
                allowed = ", ".join(sorted(self.allowed)) or "none"
                raise invalid_argument(
                    f"options.{name}",
                    f"is not allowed on model {self.name!r} (allowed: {allowed})",
                    reason="OPTION_NOT_ALLOWED",
                )

    @property
    def in_flight(self) -> int:
        """Calls holding one of the route's slots now."""
        return self.admission.in_flight

    def slot(self) -> AbstractAsyncContextManager[Admitted]:
        """Hold one of the route's concurrency slots for the block (sagewire.core.admission):
        waits up to `admission.max_wait_ms` for one, then raises UNAVAILABLE."""
        return self.admission.slot()


def not_supported(field: str, operation: Operation) -> SagewireError:
    name = field.removeprefix("options.")
    return invalid_argument(
        field,
        f"{operation} has no {PARAMETERS[name]} parameter, so sagewire would have to drop it; "
        f"leave it unset (this call takes {takes(operation)})",
        reason="OPTION_NOT_SUPPORTED",
    )


def _route(name: str, settings: RouteSettings, label: str = "") -> Route:
    return Route(
        name=name,
        label=label,
        settings=settings,
        # RouteDefaults' fields are a subset of InvocationOptions' (same names).
        defaults=InvocationOptions(**settings.defaults.model_dump()),
        allowed=frozenset(str(o) for o in settings.allow),
    )


class RouteTable:
    """Resolves a caller's `model` to a Route. `guard` decides who may use and see which route
    (every resolution and listing passes it, so no RPC can skip authorisation)."""

    def __init__(
        self,
        routes: Mapping[str, RouteSettings],
        passthrough: bool = False,
        guard: RouteGuard | None = None,
    ) -> None:
        self._routes = {name: _route(name, s) for name, s in routes.items()}
        self._passthrough = passthrough
        self.guard = guard or OpenGuard()
        # Pass-through routes are made on first use and kept, so their concurrency bound holds.
        self._passthrough_routes: dict[str, Route] = {}

    def resolve(self, model: str) -> Route:
        if not model:
            raise invalid_argument("model", "is required (a model name from ListModels)")
        route = self._routes.get(model)
        if route is not None:
            calls.set_model(route.label)
            self.guard.admit(route.name)
            return route
        if self._passthrough and model.startswith(PASSTHROUGH_PREFIX):
            self.guard.admit(model)  # before anything is made for the name
            route = self._passthrough_routes.get(model) or self._passthrough_route(model)
            calls.set_model(route.label)
            return route
        raise model_not_found(model, [n for n in self._routes if self.guard.visible(n)])

    def _passthrough_route(self, model: str) -> Route:
        endpoint = model.removeprefix(PASSTHROUGH_PREFIX)
        try:
            settings = RouteSettings(
                endpoint=endpoint, mode=RouteMode.STREAM, framing=StreamFraming.RAW
            )
        except ValueError:
            raise invalid_argument(
                "model", f"{endpoint!r} is not a valid SageMaker endpoint name"
            ) from None
        # Callers may set every option of the operation they call (Invoke: InvokeEndpoint's).
        route = replace(
            _route(model, settings, PASSTHROUGH), allowed=OPTIONS[Operation.INVOKE_ENDPOINT]
        )
        return self._passthrough_routes.setdefault(model, route)

    def visible(self) -> list[Route]:
        """The configured routes the current caller may see, by name."""
        return sorted(
            (r for r in self._routes.values() if self.guard.visible(r.name)), key=lambda r: r.name
        )

    def infos(self) -> list[RouteInfo]:
        return [r.info() for r in self.visible()]
