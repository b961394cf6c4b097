"""Authorisation: may this principal call this route? Default-deny once authentication is on;
each route's `callers` list principals, `group:<name>` entries, or "*" (any authenticated
caller). Pure: no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sagewire.security.principal import Principal


@dataclass(frozen=True, slots=True)
class CallerList:
    """A compiled `callers` list."""

    anyone: bool
    principals: frozenset[str]
    groups: frozenset[str]

    @classmethod
    def of(cls, callers: Iterable[str]) -> CallerList:
        entries = list(callers)
        return cls(
            anyone="*" in entries,
            principals=frozenset(e for e in entries if e != "*" and not e.startswith("group:")),
            groups=frozenset(e.removeprefix("group:") for e in entries if e.startswith("group:")),
        )

    def admits(self, principal: Principal) -> bool:
        return (
            self.anyone
            or principal.id in self.principals
            or not self.groups.isdisjoint(principal.groups)
        )


NOBODY = CallerList(False, frozenset(), frozenset())


class Policy:
    """Who may call which route (`routes`: route name → its callers), reflection, and the
    `endpoint/<name>` pass-through models."""

    def __init__(
        self,
        routes: Mapping[str, Iterable[str]],
        reflection: Iterable[str] = (),
        passthrough: Iterable[str] = (),
    ) -> None:
        self._routes = {name: CallerList.of(callers) for name, callers in routes.items()}
        self._reflection = CallerList.of(reflection)
        self._passthrough = CallerList.of(passthrough)

    def may_call(self, principal: Principal, route: str) -> bool:
        callers = self._routes.get(route)
        if callers is None:  # not a configured route: a pass-through endpoint/<name>
            callers = self._passthrough
        return callers.admits(principal)

    def may_reflect(self, principal: Principal) -> bool:
        return self._reflection.admits(principal)
