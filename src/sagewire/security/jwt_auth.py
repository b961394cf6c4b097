"""Bearer-token verification: a JWT signed by one of the issuer's JWKS keys, with the issuer,
audience, expiry and not-before checked (with `leeway_s`) and the algorithm on an explicit
allow-list of asymmetric algorithms.

The cryptography is PyJWT's (on `cryptography`/OpenSSL): it is the most used JOSE library in
Python, refuses `alg: none` unless asked, and refuses to use an asymmetric public key as an HMAC
secret (the HS/RS key-confusion attack). We add the checks around it: the header's algorithm
must be allowed *and* agree with the key's own `alg`/type before PyJWT is called.

Verified tokens are remembered until their expiry (bounded, dropped whenever the JWKS changes)
so a caller reusing its token pays for one signature check, not one per call.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import cast

import jwt

from sagewire.config.security import JwtSettings
from sagewire.security.jwks import JwksCache
from sagewire.security.principal import Principal, unauthenticated

_VERIFIED_CACHE = 10_000
_MAX_SUBJECT = 256
_MAX_GROUPS = 64
# Key types each algorithm family may use (JWK "kty").
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


def _invalid(why: str = "its signature or claims did not verify") -> Exception:
    return unauthenticated(f"bearer token rejected: {why}", "TOKEN_INVALID")


def _clean(value: object) -> str | None:
    if not isinstance(value, str) or not value or len(value) > _MAX_SUBJECT:
        return None
    if any(ord(c) < 0x20 or c.isspace() for c in value):
        return None
    return value


class JwtVerifier:
    """Turns a bearer token into a Principal `jwt:sub:<sub>` with its groups, or raises
    UNAUTHENTICATED (TOKEN_MALFORMED, TOKEN_INVALID, TOKEN_EXPIRED, TOKEN_NOT_YET_VALID,
    TOKEN_KEY_UNKNOWN, TOKEN_TOO_LARGE) or UNAVAILABLE (JWKS_UNAVAILABLE)."""

    def __init__(
        self,
        settings: JwtSettings,
        groups: Callable[[str, frozenset[str]], frozenset[str]],
        jwks: JwksCache | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._groups = groups
        self.jwks = jwks or JwksCache(settings)
        self._clock = clock
        self._allowed = frozenset(settings.algorithms)
        # sha256(token) → (principal, expiry, JWKS generation)
        self._verified: OrderedDict[bytes, tuple[Principal, float, int]] = OrderedDict()

    async def verify(self, token: str) -> Principal:
        if len(token) > self._settings.max_token_bytes:
            raise unauthenticated(
                f"bearer token rejected: longer than {self._settings.max_token_bytes} bytes",
                "TOKEN_TOO_LARGE",
            )
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        cached = self._verified.get(digest)
        if cached is not None:
            principal, expires, generation = cached
            if generation == self.jwks.generation and self._clock() < expires:
                return principal
            del self._verified[digest]
        principal, expires = await self._verify(token)
        self._verified[digest] = (principal, expires, self.jwks.generation)
        if len(self._verified) > _VERIFIED_CACHE:
            self._verified.popitem(last=False)
        return principal

    async def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise unauthenticated(
                "bearer token rejected: not a JWS compact token", "TOKEN_MALFORMED"
            ) from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._allowed:
            raise _invalid("its signing algorithm is not accepted here")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise unauthenticated("bearer token rejected: malformed kid", "TOKEN_MALFORMED")
        generation = self.jwks.generation
        key = await self.jwks.key(kid)
        if key is None:
            raise unauthenticated(
                "bearer token rejected: signed by a key this server does not know "
                "(rotated out, or another issuer)",
                "TOKEN_KEY_UNKNOWN",
            )
        declared = key.declared_alg
        if (declared is not None and declared != alg) or key.key_type != _KEY_TYPES.get(alg[:2]):
            raise _invalid("its algorithm does not match its key")
        claims = self._decode(token, key.jwk, alg)
        subject = _clean(claims.get("sub"))
        if subject is None:
            raise _invalid("its subject (sub) is missing or not a plain string")
        if generation != self.jwks.generation:  # keys rotated while we looked: verify again
            return await self._verify(token)
        principal_id = f"jwt:sub:{subject}"
        groups = self._groups(principal_id, self._claimed_groups(claims))
        principal = Principal(principal_id, groups)
        return principal, float(cast("float", claims["exp"])) + self._settings.leeway_s

    def _decode(self, token: str, key: jwt.PyJWK, alg: str) -> Mapping[str, object]:
        s = self._settings
        try:
            claims: Mapping[str, object] = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=s.audience,
                issuer=s.issuer,
                leeway=s.leeway_s,
                options={"require": ["exp", "iss", "aud", "sub"], "verify_iat": False},
            )
        except jwt.ExpiredSignatureError:
            raise unauthenticated(
                "bearer token rejected: expired; get a new one", "TOKEN_EXPIRED"
            ) from None
        except jwt.ImmatureSignatureError:
            raise unauthenticated(
                "bearer token rejected: not valid yet (nbf in the future)", "TOKEN_NOT_YET_VALID"
            ) from None
        except (jwt.InvalidAudienceError, jwt.InvalidIssuerError):
            raise _invalid("it was not issued for this service") from None
        except jwt.MissingRequiredClaimError as exc:
            raise _invalid(f"it has no {exc.claim} claim") from None
        except jwt.DecodeError:
            # Bad signature and undecodable segments both land here; either way, not ours.
            raise _invalid() from None
        except (jwt.PyJWTError, ValueError, TypeError):
            raise _invalid() from None
        return claims

    def _claimed_groups(self, claims: Mapping[str, object]) -> frozenset[str]:
        value = claims.get(self._settings.groups_claim)
        if not isinstance(value, list):
            return frozenset()
        return frozenset(g for g in (_clean(v) for v in value[:_MAX_GROUPS]) if g is not None)
