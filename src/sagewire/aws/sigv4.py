"""SigV4 signing of the lean path's requests (sagewire.aws.lean): botocore's SigV4Auth, computed
with what stays the same between calls kept.

Why our own code: `botocore.auth.SigV4Auth.add_auth` costs ~54 µs per InvokeEndpoint on this
project's bench machine (`python -m bench.lean_stages`), the largest piece of the lean call
that is not HTTP. It derives the signing key with four HMACs on every call, although the key
changes only with the day and the credentials, and builds the canonical headers through an
email.message header map with generic sorting, although the lean path knows its headers. Here:
- the signing key is derived once per (secret key, day) and reused;
- the canonical URI is computed by botocore's own rule (`normalize_url_path`, then `quote` with
  `safe="/~"`) once per request URL;
- the canonical headers follow SigV4Auth exactly: every header but botocore's
  SIGNED_HEADERS_BLACKLIST, names lower-cased and sorted, values with runs of whitespace folded
  to one space (botocore's `_header_value`), X-Amz-Date and X-Amz-Security-Token added as
  `_modify_request_before_signing` adds them, and the body's SHA-256 (SigV4Auth signs the
  payload of every SageMaker Runtime request, HTTP or HTTPS: nothing sets
  `payload_signing_enabled` for it).
- the canonical request up to the payload hash is kept per (URL, headers in order): between
  calls only the X-Amz-Date changes, once a second, so folding, sorting and joining the headers
  again (~3 µs of the ~8 µs a signature costs) would give the same text again.
tests/unit/test_sigv4.py shows the headers equal SigV4Auth's for the same timestamp, and
tests/integration/test_lean_conformance.py the canonical requests equal botocore's on the
wire (the emulator verifies every signature with `--verify-sigv4`).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from functools import lru_cache
from urllib.parse import quote, urlsplit

from botocore.auth import EMPTY_SHA256_HASH, SIGNED_HEADERS_BLACKLIST
from botocore.utils import normalize_url_path

_SKIPPED = frozenset(SIGNED_HEADERS_BLACKLIST)
# Canonical requests kept per signer: one per header set in use (a header whose value changes
# per call, a custom attribute or inference ID, makes every call a miss: then the oldest go).
_CANONICAL_KEPT = 64


@lru_cache(maxsize=1024)
def canonical_uri(url: str) -> str:
    """SigV4Auth's canonical URI of a request URL whose path is already percent-encoded (it
    encodes once more, as botocore does for every service but S3)."""
    return quote(normalize_url_path(urlsplit(url).path), safe="/~")


def payload_hash(body: bytes) -> str:
    """The hex SHA-256 of a request body, as SigV4Auth's `payload` computes it (the same for
    every attempt of a call: computed once, passed to `Signer.sign`)."""
    return hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256_HASH


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


class Signer:
    """Signs requests for one (signing name, region), as botocore.auth.SigV4Auth signs them."""

    def __init__(self, service: str, region: str) -> None:
        self._service = service
        self._region = region
        self._key: tuple[str, str, bytes] | None = None  # (secret key, day, signing key)
        self._second = -1
        self._timestamp = ""
        # (url, *header items) → (signed header names, canonical request without payload hash)
        self._canonical: dict[tuple[object, ...], tuple[str, str]] = {}

    def timestamp(self) -> str:
        """The current UTC time as SigV4's `YYYYMMDDTHHMMSSZ` (botocore's, truncated to the
        second), formatted once per second."""
        now = int(time.time())
        if now != self._second:
            self._timestamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
            self._second = now
        return self._timestamp

    def _signing_key(self, secret_key: str, day: str) -> bytes:
        cached = self._key
        if cached is not None and cached[0] == secret_key and cached[1] == day:
            return cached[2]
        key = _hmac(f"AWS4{secret_key}".encode(), day)
        for part in (self._region, self._service, "aws4_request"):
            key = _hmac(key, part)
        self._key = (secret_key, day, key)
        return key

    def sign(
        self,
        headers: dict[str, str],
        url: str,
        body: bytes,
        access_key: str,
        secret_key: str,
        token: str | None,
        timestamp: str | None = None,
        body_hash: str | None = None,
    ) -> None:
        """Add X-Amz-Date, X-Amz-Security-Token (when `token`) and Authorization to `headers`
        (which must carry `host`, and no header twice in different case) for a POST of `body`
        to `url` (path percent-encoded, no query string). `timestamp`: the signing time
        (`YYYYMMDDTHHMMSSZ`), now when None; `body_hash`: `payload_hash(body)` when known."""
        stamp = timestamp or self.timestamp()
        headers.pop("Authorization", None)
        headers.pop("X-Amz-Date", None)
        headers["X-Amz-Date"] = stamp
        if token:
            headers.pop("X-Amz-Security-Token", None)
            headers["X-Amz-Security-Token"] = token
        names, prefix = self._canonical_prefix(url, headers)
        canonical = prefix + (body_hash or payload_hash(body))
        day = stamp[:8]
        scope = f"{day}/{self._region}/{self._service}/aws4_request"
        to_sign = "\n".join(
            (
                "AWS4-HMAC-SHA256",
                stamp,
                scope,
                hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
            )
        )
        signature = hmac.new(
            self._signing_key(secret_key, day), to_sign.encode("utf-8"), hashlib.sha256
        ).hexdigest()
        headers["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
            f"SignedHeaders={names}, Signature={signature}"
        )

    def _canonical_prefix(self, url: str, headers: dict[str, str]) -> tuple[str, str]:
        """The signed header names and the canonical request up to (not with) the payload hash,
        computed once per (url, headers in order) while kept."""
        key = (url, *headers.items())
        kept = self._canonical.get(key)
        if kept is not None:
            return kept
        signed = sorted(
            (name.lower(), " ".join(value.split()))
            for name, value in headers.items()
            if name.lower() not in _SKIPPED
        )
        names = ";".join(name for name, _ in signed)
        lines = "\n".join(f"{name}:{value}" for name, value in signed)
        kept = (names, f"POST\n{canonical_uri(url)}\n\n{lines}\n\n{names}\n")
        if len(self._canonical) >= _CANONICAL_KEPT:
            del self._canonical[next(iter(self._canonical))]
        self._canonical[key] = kept
        return kept
