"""The security layer of one server, transport-neutral: each transport's edge hands in a
call's `Credentials` once (`enter`), and the core asks it about routes (`admit`, `visible`) and
job ownership (`owner`) through the `RouteGuard` port (core/ports.py).

The caller travels in a context variable: each call runs in its own asyncio task (grpc.aio and
aiohttp both do this), so the principal set at the edge is the one the core sees for that call,
including in tasks the call starts (Converse turns), and never another call's.

Fails closed: with authentication on, a route resolved outside an authenticated call is denied.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field

from sagewire.config.settings import Settings
from sagewire.core.errors import SagewireError
from sagewire.observability import calls, signals
from sagewire.security import audit
from sagewire.security.authn import Authenticator
from sagewire.security.policy import Policy
from sagewire.security.principal import Credentials, Principal, permission_denied
from sagewire.security.quotas import Quotas


@dataclass(slots=True)
class CallScope:
    """One authenticated call: who, what, and the quota slots to give back when it ends."""

    principal: Principal
    method: str
    model: str
    releases: list[Callable[[], None]] = field(default_factory=list)
    admitted: set[str] = field(default_factory=set)

    def close(self) -> None:
        releases, self.releases = self.releases, []
        for release in releases:
            release()


_current: ContextVar[CallScope | None] = ContextVar("sagewire_call_scope", default=None)


def owner_binding(principal_id: str) -> str:
    """What a job id records of its submitter: a digest, so ids do not spell out who."""
    digest = hashlib.sha256(principal_id.encode("utf-8")).digest()[:16]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class Security:
    """Authentication, authorisation, quotas and the audit log for one server's settings."""

    def __init__(self, settings: Settings) -> None:
        auth = settings.auth
        self.enabled = auth.enabled
        self.mtls = auth.mtls
        self.authenticator = Authenticator(auth) if self.enabled else None
        self.policy = Policy(
            {name: route.callers for name, route in settings.routes.items()},
            auth.reflection_callers,
            auth.passthrough_callers,
        )
        self._limits = settings.quotas
        self._quotas = Quotas(settings.quotas.max_tracked_callers)

    async def close(self) -> None:
        if self.authenticator is not None:
            await self.authenticator.close()

    async def enter(self, credentials: Credentials) -> CallScope | None:
        """Authenticate the call and take its caller-wide quota; None when auth is off.
        Raises UNAUTHENTICATED, UNAVAILABLE (JWKS unreachable) or RESOURCE_EXHAUSTED."""
        if self.authenticator is None:
            return None
        principal: Principal | None = None
        try:
            principal = await self.authenticator.authenticate(credentials)
            release = self._quotas.admit(principal.id, self._limits.per_caller, "your quota")
        except SagewireError as error:
            audit.denied(
                principal.id if principal else None, credentials.method, credentials.model, error
            )
            raise
        scope = CallScope(principal, credentials.method, credentials.model)
        calls.set_principal(principal.id)  # for the access record
        if release is not None:
            scope.releases.append(release)
        _current.set(scope)
        return scope

    async def check_reflection(self, credentials: Credentials) -> None:
        """Reflection is default-deny too once auth is on (auth.reflection_callers)."""
        scope = await self.enter(credentials)
        if scope is None:
            return
        scope.close()
        if not self.policy.may_reflect(scope.principal):
            error = permission_denied("server reflection is not open to you", "REFLECTION_DENIED")
            audit.denied(scope.principal.id, credentials.method, "", error)
            raise error

    # RouteGuard (core/ports.py)

    def admit(self, route: str) -> None:
        """The current caller may call `route` and is within its quota there, or raise
        PERMISSION_DENIED / RESOURCE_EXHAUSTED. The route slot is held until the call ends."""
        if not self.enabled:
            return
        scope = _current.get()
        if scope is None:
            raise permission_denied("this call is not authenticated", "NOT_AUTHENTICATED")
        if route in scope.admitted:
            return
        try:
            if not self.policy.may_call(scope.principal, route):
                raise permission_denied(
                    f"{scope.principal.id} may not call model {route!r}; ask its owners to add "
                    "you to the route's callers",
                    "MODEL_NOT_PERMITTED",
                )
            release = self._quotas.admit(
                f"{scope.principal.id} × {route}",
                self._limits.per_caller_route,
                f"your quota on model {route!r}",
            )
        except SagewireError as error:
            audit.denied(scope.principal.id, scope.method, route, error)
            signals.rejected(error.reason)  # sagewire_route_rejections_total
            raise
        if release is not None:
            scope.releases.append(release)
        scope.admitted.add(route)

    def visible(self, route: str) -> bool:
        """May the current caller see `route` (ListModels, unknown-model hints)?"""
        if not self.enabled:
            return True
        scope = _current.get()
        return scope is not None and self.policy.may_call(scope.principal, route)

    def owner(self) -> str:
        """The current caller's job-id binding; "" when authentication is off."""
        if not self.enabled:
            return ""
        scope = _current.get()
        return owner_binding(scope.principal.id) if scope is not None else "-"
