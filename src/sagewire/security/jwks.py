"""The JWKS cache: the issuer's public keys fetched over HTTP(S), kept for their Cache-Control
lifetime, refreshed early (at most every `jwks_refresh_min_interval_s`) when a token names an
unknown `kid`, and kept when a refresh fails.

Why not PyJWT's PyJWKClient: it fetches with blocking urllib on the calling thread, which would
stall the event loop (every call on the replica) for a slow JWKS endpoint, and it ignores
Cache-Control. Key parsing is PyJWT's (`PyJWKSet`); only the fetching and caching are ours.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import jwt

from sagewire.config.security import JwtSettings
from sagewire.core.errors import ErrorKind, SagewireError

log = logging.getLogger("sagewire.auth")

_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*\"?(\d+)")
_MAX_JWKS_BYTES = 1024 * 1024
# A failed fetch is retried no sooner than this, even for expired keys.
_RETRY_FAILED_S = 5.0


def cache_lifetime(cache_control: str | None, settings: JwtSettings) -> float:
    """Seconds to keep a JWKS response: its max-age clamped to [min, max], else the default."""
    ttl = settings.jwks_default_ttl_s
    if cache_control:
        lowered = cache_control.lower()
        match = _MAX_AGE.search(lowered)
        if "no-store" in lowered or "no-cache" in lowered:
            ttl = 0.0
        elif match:
            ttl = float(match.group(1))
    return min(max(ttl, settings.jwks_min_ttl_s), settings.jwks_max_ttl_s)


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One usable JWKS key: PyJWT's parsed key, its type and the algorithm it declares."""

    jwk: jwt.PyJWK
    key_type: str
    declared_alg: str | None


def _signing_keys(doc: object) -> dict[str, SigningKey]:
    """The signature keys of a JWKS document by kid (symmetric and encryption keys dropped:
    a public document cannot hold a secret, and `use: enc` keys do not sign)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError("not a JWKS document (no keys list)")
    usable = [
        k
        for k in doc["keys"]
        if isinstance(k, dict) and k.get("kty") != "oct" and k.get("use", "sig") == "sig"
    ]
    keyset = jwt.PyJWKSet(usable)
    declared = {str(k.get("kid", "")): k.get("alg") for k in usable}
    keys = {}
    for key in keyset.keys:
        kid = key.key_id or ""
        keys[kid] = SigningKey(key, str(key.key_type), declared.get(kid))
    return keys


def jwks_unavailable() -> SagewireError:
    return SagewireError(
        message="bearer tokens cannot be verified right now (the issuer's keys are unreachable);"
        " retry shortly",
        kind=ErrorKind.UNAVAILABLE,
        reason="JWKS_UNAVAILABLE",
        retry_after_s=1.0,
    )


class JwksCache:
    """Signing keys by `kid`. `generation` changes whenever the set of keys changes, so caches
    built on a key (verified tokens) can be dropped when it is rotated out."""

    def __init__(self, settings: JwtSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._clock = clock
        self._keys: dict[str, SigningKey] = {}
        self._fingerprint = ""
        self._expires = float("-inf")
        self._last_fetch = float("-inf")
        self._refreshing: asyncio.Future[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self.generation = 0
        self.fetches = 0

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _open_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            ssl_context: ssl.SSLContext | bool = True
            if self._settings.jwks_ca_file:
                ssl_context = ssl.create_default_context(cafile=self._settings.jwks_ca_file)
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._settings.jwks_timeout_s),
                connector=aiohttp.TCPConnector(ssl=ssl_context, limit=2),
            )
        return self._session

    async def key(self, kid: str | None) -> SigningKey | None:
        """The key named `kid` (a token without `kid` gets the only key, if there is one)."""
        now = self._clock()
        unknown = self._lookup(kid) is None
        if now >= self._expires or (
            unknown and now - self._last_fetch >= self._settings.jwks_refresh_min_interval_s
        ):
            await self._refresh()
        if not self._keys:
            raise jwks_unavailable()
        return self._lookup(kid)

    def _lookup(self, kid: str | None) -> SigningKey | None:
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    async def _refresh(self) -> None:
        """One fetch at a time; concurrent callers wait for the same one."""
        if self._refreshing is not None:
            await asyncio.shield(self._refreshing)
            return
        self._refreshing = asyncio.get_running_loop().create_future()
        try:
            await self._fetch()
        finally:
            self._refreshing.set_result(None)
            self._refreshing = None

    async def _fetch(self) -> None:
        self._last_fetch = self._clock()
        self.fetches += 1
        url = self._settings.jwks_url
        try:
            async with self._open_session().get(url, allow_redirects=False) as response:
                if response.status != 200:
                    raise ValueError(f"HTTP {response.status}")
                body = await response.content.read(_MAX_JWKS_BYTES + 1)
                if len(body) > _MAX_JWKS_BYTES:
                    raise ValueError("response larger than 1 MiB")
                ttl = cache_lifetime(response.headers.get("Cache-Control"), self._settings)
            doc = json.loads(body)
            keys = _signing_keys(doc)
        except (aiohttp.ClientError, TimeoutError, ValueError, jwt.PyJWTError) as exc:
            # Keep what we have; try again a little later (never hammer a failing issuer).
            self._expires = max(self._expires, self._clock() + _RETRY_FAILED_S)
            log.warning(
                "JWKS fetch from %s failed, keeping %d known keys: %s", url, len(self._keys), exc
            )
            return
        fingerprint = json.dumps(doc.get("keys"), sort_keys=True)
        if fingerprint != self._fingerprint:
            self._fingerprint = fingerprint
            self._keys = keys
            self.generation += 1
            log.info("JWKS from %s: %d keys (%s)", url, len(keys), ", ".join(sorted(keys)))
        self._expires = self._clock() + ttl
