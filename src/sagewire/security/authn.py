"""Authentication: one call's credentials → its Principal, or UNAUTHENTICATED.

Which credential wins: a call presenting a bearer token or an API key is judged on it alone
(a bad token is never excused by a good client certificate); a call presenting neither is
identified by its mTLS client certificate when `auth.mtls` is on. A header present twice is
refused rather than resolved by picking one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from sagewire.config.security import AuthSettings
from sagewire.security.api_keys import ApiKeys
from sagewire.security.principal import Credentials, PeerIdentity, Principal, unauthenticated

if TYPE_CHECKING:
    from sagewire.security.jwt_auth import JwtVerifier


def principal_of_certificate(peer: PeerIdentity) -> str | None:
    """The certificate's SPIFFE ID (its spiffe:// URI SAN), else `dns:<first DNS SAN>`; None
    when it names neither. A certificate with two SPIFFE IDs names no one (an X.509-SVID has
    exactly one URI SAN)."""
    spiffe = [uri for uri in peer.uris if uri.startswith("spiffe://")]
    if len(spiffe) == 1:
        return spiffe[0]
    if spiffe:
        return None
    return f"dns:{peer.dns_names[0]}" if peer.dns_names else None


class Authenticator:
    """Built from `[auth]`; `authenticate` is called once per call at the edge."""

    def __init__(self, settings: AuthSettings) -> None:
        self._settings = settings
        self._memberships = _memberships(settings.groups)
        self.jwt: JwtVerifier | None = None
        if settings.jwt:
            # Only then: PyJWT loads `cryptography` (OpenSSL bindings, ~8 MB of RSS).
            from sagewire.security.jwt_auth import JwtVerifier

            self.jwt = JwtVerifier(settings.jwt, self.groups)
        self.api_keys = ApiKeys(settings.api_keys, self.groups) if settings.api_keys else None

    def groups(self, principal_id: str, claimed: frozenset[str]) -> frozenset[str]:
        """Claimed groups (JWT) plus those `auth.groups` gives the principal."""
        configured = self._memberships.get(principal_id)
        return claimed | configured if configured else claimed

    def _accepted(self) -> str:
        ways = []
        if self.jwt is not None:
            ways.append("'authorization: Bearer <JWT>'")
        if self.api_keys is not None:
            ways.append("'x-api-key: <key>'")
        if self._settings.mtls:
            ways.append("a client certificate")
        return " or ".join(ways)

    async def authenticate(self, credentials: Credentials) -> Principal:
        if len(credentials.authorization) > 1 or len(credentials.api_key) > 1:
            raise unauthenticated(
                "credentials rejected: send one authorization or x-api-key header, not several",
                "CREDENTIALS_AMBIGUOUS",
            )
        if credentials.authorization and credentials.api_key:
            raise unauthenticated(
                "credentials rejected: send either a bearer token or an API key, not both",
                "CREDENTIALS_AMBIGUOUS",
            )
        if credentials.authorization:
            return await self._bearer(credentials.authorization[0])
        if credentials.api_key:
            if self.api_keys is None:
                raise unauthenticated(
                    f"API keys are not accepted here; present {self._accepted()}",
                    "CREDENTIALS_UNSUPPORTED",
                )
            return self.api_keys.verify(credentials.api_key[0])
        if self._settings.mtls and credentials.peer is not None:
            principal_id = principal_of_certificate(credentials.peer)
            if principal_id is None:
                raise unauthenticated(
                    "client certificate names no single SPIFFE ID or DNS name to identify you by",
                    "CERTIFICATE_IDENTITY_MISSING",
                )
            return Principal(principal_id, self.groups(principal_id, frozenset()))
        raise unauthenticated(
            f"this server requires authentication: present {self._accepted()}",
            "CREDENTIALS_MISSING",
        )

    async def _bearer(self, value: str) -> Principal:
        scheme, _, token = value.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or " " in token:
            raise unauthenticated("authorization must be 'Bearer <token>'", "CREDENTIALS_MALFORMED")
        if self.jwt is None:
            raise unauthenticated(
                f"bearer tokens are not accepted here; present {self._accepted()}",
                "CREDENTIALS_UNSUPPORTED",
            )
        return await self.jwt.verify(token)

    async def close(self) -> None:
        if self.jwt is not None:
            await self.jwt.jwks.close()


def _memberships(groups: Mapping[str, list[str]]) -> dict[str, frozenset[str]]:
    members: dict[str, set[str]] = {}
    for group, principals in groups.items():
        for principal in principals:
            members.setdefault(principal, set()).add(group)
    return {principal: frozenset(names) for principal, names in members.items()}
