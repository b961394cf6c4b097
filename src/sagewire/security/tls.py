"""TLS server credentials from PEM files, re-read when the files change (rotation without a
restart), for the gRPC listener (`grpc_credentials`) and the REST listener (`ssl_context`).

How rotation works: gRPC asks `_fetch` for a new configuration on every new connection's
handshake (grpc's dynamic SSL server credentials, which grpc.aio honours); Python's ssl module
lets `ssl_context`'s SNI callback swap the context of a connection being accepted. Both look
at the files' stat at most every `reload_check_s`, and only a complete, consistent set (the
certificate parses, the key matches it, the client CA parses) replaces the running one: a bad
new file keeps the last good configuration and logs why. Connections already open keep the
certificate they were accepted with.

The cryptography is OpenSSL/BoringSSL's (via grpc and the ssl module); `cryptography` only
parses the PEM files to check them before use.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sagewire.config.security import TlsSettings

log = logging.getLogger("sagewire.tls")

type Stamp = tuple[tuple[int, int, int], ...]


class TlsFilesError(Exception):
    """The TLS files are missing, unreadable or do not belong together."""


@dataclass(frozen=True)
class TlsMaterial:
    """One consistent set of PEM bytes."""

    cert_chain: bytes
    private_key: bytes
    client_ca: bytes | None


def _public_der(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_material(settings: TlsSettings) -> TlsMaterial:
    """Read and check the files; TlsFilesError names what is wrong (never the key's bytes)."""
    try:
        chain = Path(settings.cert_file).read_bytes()
        key = Path(settings.key_file).read_bytes()
        ca = Path(settings.client_ca_file).read_bytes() if settings.client_ca_file else None
    except OSError as exc:
        raise TlsFilesError(f"cannot read {exc.filename}: {exc.strerror}") from None
    try:
        certs = x509.load_pem_x509_certificates(chain)
    except ValueError:
        raise TlsFilesError(f"cert_file {settings.cert_file}: no PEM certificate") from None
    try:
        private = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError):
        raise TlsFilesError(
            f"key_file {settings.key_file}: not an unencrypted PEM private key"
        ) from None
    if _public_der(certs[0].public_key()) != _public_der(private.public_key()):
        raise TlsFilesError(
            f"key_file {settings.key_file} does not match the certificate in {settings.cert_file}"
        )
    if ca is not None:
        try:
            x509.load_pem_x509_certificates(ca)
        except ValueError:
            raise TlsFilesError(
                f"client_ca_file {settings.client_ca_file}: no PEM certificate"
            ) from None
    return TlsMaterial(chain, key, ca)


class RotatingTls:
    """The listener's TLS material, reloaded when its files change. Thread-safe: gRPC calls
    the fetcher from its own threads."""

    def __init__(self, settings: TlsSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._stamp = self._file_stamp()
        self.material = load_material(settings)  # start-up fails loudly on bad files
        self._checked = clock()
        self.reloads = 0
        self._ssl: ssl.SSLContext | None = None

    @property
    def mutual(self) -> bool:
        return self._settings.client_ca_file is not None

    def _paths(self) -> list[str]:
        s = self._settings
        return [p for p in (s.cert_file, s.key_file, s.client_ca_file) if p]

    def _file_stamp(self) -> Stamp:
        stamps = []
        for path in self._paths():
            try:
                st = os.stat(path)
                stamps.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                stamps.append((-1, -1, -1))
        return tuple(stamps)

    def refresh(self) -> bool:
        """Reload when the files changed since the last look (at most every reload_check_s);
        True when new material is in use."""
        with self._lock:
            now = self._clock()
            if now - self._checked < self._settings.reload_check_s:
                return False
            self._checked = now
            stamp = self._file_stamp()
            if stamp == self._stamp:
                return False
            self._stamp = stamp
            try:
                material = load_material(self._settings)
            except TlsFilesError as exc:
                log.warning("TLS files changed but are not usable, keeping the last good: %s", exc)
                return False
            self.material = material
            self._ssl = None
            self.reloads += 1
            log.info("TLS certificate reloaded from %s", self._settings.cert_file)
            return True

    # gRPC

    def _grpc_config(self) -> grpc.ServerCertificateConfiguration:
        m = self.material
        pairs = [(m.private_key, m.cert_chain)]
        return grpc.ssl_server_certificate_configuration(pairs, m.client_ca)

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        try:
            return self._grpc_config() if self.refresh() else None
        except Exception:  # never let a reload problem break the handshake of a new client
            log.exception("TLS reload failed; keeping the last good configuration")
            return None

    def grpc_credentials(self) -> grpc.ServerCredentials:
        # grpc-stubs type the fetcher as never returning None; grpc documents None as "keep
        # the current configuration".
        fetch = cast("Callable[[], grpc.ServerCertificateConfiguration]", self._fetch)
        return grpc.dynamic_ssl_server_credentials(
            self._grpc_config(), fetch, require_client_authentication=self.mutual
        )

    # ssl module (the REST listener)

    def _context(self) -> ssl.SSLContext:
        m = self.material
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        # The ssl module loads PEM from files only; the paths are read again (they passed
        # load_material just now, a rotation racing this is caught by the next check).
        context.load_cert_chain(self._settings.cert_file, self._settings.key_file)
        if m.client_ca is not None:
            context.load_verify_locations(cadata=m.client_ca.decode("ascii"))
            context.verify_mode = ssl.CERT_REQUIRED
        context.sni_callback = self._sni
        return context

    def ssl_context(self) -> ssl.SSLContext:
        """An SSLContext whose SNI callback moves new connections onto reloaded material."""
        with self._lock:
            if self._ssl is None:
                self._ssl = self._context()
            return self._ssl

    def _sni(self, sock: ssl.SSLObject | ssl.SSLSocket, name: str | None, _: object) -> None:
        try:
            self.refresh()
            current = self.ssl_context()
            if sock.context is not current:
                sock.context = current
        except Exception:
            log.exception("TLS reload failed; keeping the last good configuration")
