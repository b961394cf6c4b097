"""Who is calling: the principal, the credentials a transport hands in, and the errors of
authentication and authorisation. Transport-neutral: gRPC metadata and HTTP headers both become
`Credentials`; a TLS peer certificate becomes a `PeerIdentity`.

Principal ids (also the forms routes' `callers` lists use, docs/security.md):
  spiffe://<trust domain>/<path>   mTLS client certificate's SPIFFE ID (URI SAN)
  dns:<name>                       mTLS client certificate's first DNS SAN (no SPIFFE ID)
  jwt:sub:<subject>                a JWT bearer token's `sub`
  key:<name>                       a static API key's name
"""

from __future__ import annotations

from dataclasses import dataclass

from sagewire.core.errors import ErrorKind, SagewireError

# The header/metadata an API key travels in.
API_KEY_HEADER = "x-api-key"
AUTHORIZATION_HEADER = "authorization"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. `groups` are bare group names (without "group:")."""

    id: str
    groups: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """What a verified TLS client certificate names: its URI and DNS SANs in certificate order."""

    uris: tuple[str, ...] = ()
    dns_names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Credentials:
    """What one call presents. Header values are as received (possibly several of a name:
    duplicates are refused, never resolved by picking one)."""

    authorization: tuple[str, ...] = ()
    api_key: tuple[str, ...] = ()
    peer: PeerIdentity | None = None
    # Caller-visible names of the call, for the audit log only.
    method: str = ""
    model: str = ""


def unauthenticated(message: str, reason: str) -> SagewireError:
    """UNAUTHENTICATED with a stable reason; the message helps without echoing secrets."""
    return SagewireError(message=message, kind=ErrorKind.UNAUTHENTICATED, reason=reason)


def permission_denied(message: str, reason: str = "PERMISSION_DENIED") -> SagewireError:
    return SagewireError(message=message, kind=ErrorKind.PERMISSION_DENIED, reason=reason)
