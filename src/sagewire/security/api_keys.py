"""Static API keys for small setups: callers send `x-api-key: <key>`; sagewire holds only the
keys' SHA-256 hashes, one per line:

    # name     hash of the key
    batch-job  sha256:3f1c...e9

read from `auth.api_keys.file` (re-read when it changes, so keys rotate without a restart)
and/or the environment variable named by `auth.api_keys.env`. A key's principal is `key:<name>`.

Why a plain SHA-256 and not a password hash (scrypt, argon2): keys are random (`sagewire
api-key new` makes 256-bit ones), so a fast hash leaves nothing to brute-force, and a slow one
would cost milliseconds of CPU on every call. Lookup is by hash, so comparing the presented key
never depends on the secrets' bytes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable

from sagewire.config.security import ApiKeySettings
from sagewire.security.principal import Principal, unauthenticated

log = logging.getLogger("sagewire.auth")

_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._@-]{0,127})\s+sha256:([0-9a-f]{64})$")
_MIN_KEY_CHARS = 16
_MAX_KEY_CHARS = 512
_RECHECK_S = 5.0
KEY_PREFIX = "swk_"


class ApiKeyFileError(ValueError):
    """A hashes file or variable has a line that is not `<name> sha256:<64 hex>`."""


def _rejected() -> Exception:
    return unauthenticated("API key rejected: not a key this server knows", "API_KEY_INVALID")


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key(name: str) -> tuple[str, str]:
    """A fresh random key and its hashes-file line."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, f"{name} {hash_key(key)}"


def parse_hashes(text: str, source: str) -> dict[str, str]:
    """hex digest → name, from the lines of `text`."""
    hashes: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise ApiKeyFileError(
                f"{source} line {number}: expected '<name> sha256:<64 lowercase hex>'"
            )
        hashes[match.group(2)] = match.group(1)
    return hashes


class ApiKeys:
    """Verifies presented keys against the configured hashes."""

    def __init__(
        self,
        settings: ApiKeySettings,
        groups: Callable[[str, frozenset[str]], frozenset[str]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._groups = groups
        self._clock = clock
        self._lock = threading.Lock()
        self._env: dict[str, str] = {}
        if settings.env is not None:
            self._env = parse_hashes(os.environ.get(settings.env, ""), f"${settings.env}")
        self._stamp: tuple[int, int] | None = None
        self._file: dict[str, str] = {}
        self._checked = clock()
        if settings.file is not None:
            self._file = self._read_file(settings.file)

    def _read_file(self, path: str) -> dict[str, str]:
        st = os.stat(path)
        with open(path, encoding="utf-8") as handle:
            hashes = parse_hashes(handle.read(), path)
        self._stamp = (st.st_mtime_ns, st.st_size)
        return hashes

    def _maybe_reload(self) -> None:
        path = self._settings.file
        now = self._clock()
        if path is None or now - self._checked < _RECHECK_S:
            return
        with self._lock:
            self._checked = now
            try:
                st = os.stat(path)
                if (st.st_mtime_ns, st.st_size) == self._stamp:
                    return
                self._file = self._read_file(path)
                log.info("API key hashes reloaded from %s (%d keys)", path, len(self._file))
            except (OSError, ApiKeyFileError) as exc:
                log.warning("API key file %s not reloaded, keeping the last good: %s", path, exc)

    def verify(self, key: str) -> Principal:
        self._maybe_reload()
        if not _MIN_KEY_CHARS <= len(key) <= _MAX_KEY_CHARS:
            raise _rejected()
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()
        name = self._file.get(digest) or self._env.get(digest)
        if name is None:
            raise _rejected()
        principal_id = f"key:{name}"
        return Principal(principal_id, self._groups(principal_id, frozenset()))
