"""Security settings: TLS on the listener, caller authentication, and per-caller quotas.

Documented in docs/configuration.md and docs/security.md. Secrets never live here: TLS keys and
API-key hashes are read from files (or, for API keys, an environment variable) named here.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from sagewire.config.base import Strict

# Who may call a route: a principal id, a group, or "*" (any authenticated caller).
CALLER_FORMS = (
    "spiffe://<trust domain>/<path> (mTLS SPIFFE ID)",
    "dns:<name> (mTLS DNS SAN)",
    "jwt:sub:<subject> (JWT bearer token)",
    "key:<name> (API key)",
    "group:<name>",
    '"*" (any authenticated caller)',
)
_CALLER = re.compile(
    r"^(\*|spiffe://[^\s/]+/\S*|dns:[A-Za-z0-9*.-]+|jwt:sub:\S+|key:\S+|group:\S+)$"
)
# Asymmetric JWS algorithms only: an HMAC algorithm would let anyone holding the (public) JWKS
# key forge tokens (key confusion), and "none" is no signature at all.
JwtAlgorithm = Literal[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"
]


def check_callers(callers: list[str]) -> list[str]:
    for caller in callers:
        if not _CALLER.match(caller):
            raise ValueError(f"{caller!r} is not a caller; use one of: " + ", ".join(CALLER_FORMS))
    return callers


class TlsSettings(Strict):
    """`[server.tls]`: PEM files of the listener's certificate chain and key; with
    `client_ca_file`, clients must present a certificate signed by that CA (mutual TLS).
    The files are re-read for new connections when they change (rotation without restart)."""

    cert_file: str
    key_file: str
    client_ca_file: str | None = None
    # The files are looked at (stat) at most this often, on new connections.
    reload_check_s: float = Field(default=5.0, ge=0, le=3600)


class JwtSettings(Strict):
    """`[auth.jwt]`: bearer tokens signed by keys published at `jwks_url`."""

    jwks_url: str = Field(pattern=r"^https?://")
    issuer: str = Field(min_length=1)
    audience: str = Field(min_length=1)
    algorithms: list[JwtAlgorithm] = Field(default=["RS256", "ES256"], min_length=1)
    # Clock skew allowed on exp / nbf / iat.
    leeway_s: float = Field(default=30.0, ge=0, le=300)
    # A claim holding a list of group names; each becomes "group:<name>".
    groups_claim: str = "groups"
    max_token_bytes: int = Field(default=8192, ge=256, le=65_536)
    # JWKS lifetime when the response has no Cache-Control max-age, and the bounds applied
    # to one it has.
    jwks_default_ttl_s: float = Field(default=300.0, ge=1, le=86_400)
    jwks_min_ttl_s: float = Field(default=60.0, ge=0, le=86_400)
    jwks_max_ttl_s: float = Field(default=86_400.0, ge=1, le=604_800)
    # An unknown `kid` refreshes the JWKS at most this often (forged kids cannot flood it).
    jwks_refresh_min_interval_s: float = Field(default=30.0, ge=0, le=3600)
    jwks_timeout_s: float = Field(default=5.0, gt=0, le=60)
    # PEM CA bundle for an https JWKS URL with a private CA; unset: the system store.
    jwks_ca_file: str | None = None


class ApiKeySettings(Strict):
    """`[auth.api_keys]`: SHA-256 hashes of API keys, one `<name> sha256:<hex>` per line, from
    a file and/or an environment variable (never from this TOML)."""

    file: str | None = None
    env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    @model_validator(mode="after")
    def _has_source(self) -> ApiKeySettings:
        if self.file is None and self.env is None:
            raise ValueError("set file or env (where the API-key hashes are read from)")
        return self


class AuthSettings(Strict):
    """`[auth]`: how callers are identified. Any of mtls, jwt, api_keys turns authentication
    on; then every route is default-deny (its `callers` list who may call it)."""

    # Take the principal from the client certificate (needs server.tls.client_ca_file).
    mtls: bool = False
    jwt: JwtSettings | None = None
    api_keys: ApiKeySettings | None = None
    # Extra group membership by principal id: group name → principals.
    groups: dict[str, list[str]] = Field(default_factory=dict)
    # Who may use server reflection once authentication is on (server.reflection = false
    # turns it off for everyone).
    reflection_callers: list[str] = Field(default_factory=list)
    # Who may call `endpoint/<name>` pass-through models (server.allow_endpoint_passthrough).
    passthrough_callers: list[str] = Field(default_factory=list)

    @field_validator("reflection_callers", "passthrough_callers")
    @classmethod
    def _callers(cls, callers: list[str]) -> list[str]:
        return check_callers(callers)

    @field_validator("groups")
    @classmethod
    def _group_members(cls, groups: dict[str, list[str]]) -> dict[str, list[str]]:
        for members in groups.values():
            check_callers(members)
            for member in members:
                if member == "*" or member.startswith("group:"):
                    raise ValueError(f"a group lists principals, not {member!r}")
        return groups

    @property
    def enabled(self) -> bool:
        return self.mtls or self.jwt is not None or self.api_keys is not None


class QuotaLimits(Strict):
    """Requests per second (token bucket refilled at `rps`, holding up to `burst`) and calls in
    flight. 0 means no limit."""

    rps: float = Field(default=0.0, ge=0, le=1_000_000)
    burst: int = Field(default=0, ge=0, le=1_000_000)
    max_concurrency: int = Field(default=0, ge=0, le=1_000_000)

    @model_validator(mode="after")
    def _burst(self) -> QuotaLimits:
        if self.rps and not self.burst:
            # One second's worth, at least one call.
            object.__setattr__(self, "burst", max(1, int(self.rps)))
        return self


class QuotaSettings(Strict):
    """`[quotas]`: limits per authenticated principal, and per principal × route. Per replica."""

    per_caller: QuotaLimits = QuotaLimits()
    per_caller_route: QuotaLimits = QuotaLimits()
    # Principals tracked at once; the least recently seen idle ones are forgotten past this.
    max_tracked_callers: int = Field(default=100_000, ge=100, le=10_000_000)
