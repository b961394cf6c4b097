"""A throwaway certificate authority and server certificate for the emulator's HTTP/2 listener.

Why: the HTTP/2 SDK only speaks duplex over TLS with ALPN h2 (over plain http:// its CRT
transport falls back to HTTP/1.1 and buffers the whole input), so the local bidirectional
stream needs HTTPS that clients trust. A fresh CA is made at start-up with ``trustme`` and
written to a private temp directory that is removed on exit: nothing is ever committed, and
only clients told about ``ca_file`` trust it.
"""

from __future__ import annotations

import contextlib
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import trustme

# Names the server certificate is valid for: what loopback clients may dial.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class ThrowawayTls:
    """PEM files of one throwaway CA and a server certificate it signed."""

    ca_file: Path  # give this to clients (sagewire's aws.ca_bundle)
    cert_file: Path  # server certificate chain
    key_file: Path  # server private key

    def server_context(self, alpn: tuple[str, ...] = ("h2",)) -> ssl.SSLContext:
        """A server-side TLS context offering ``alpn`` (TLS 1.2+)."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_file, self.key_file)
        context.set_alpn_protocols(list(alpn))
        return context


@contextlib.contextmanager
def throwaway_tls(names: tuple[str, ...] = LOOPBACK_NAMES) -> Iterator[ThrowawayTls]:
    """Make a CA and a server certificate for ``names`` in a temp dir; delete it on exit."""
    ca = trustme.CA(organization_name="sagewire emulator (throwaway)")
    server = ca.issue_cert(*names)
    with tempfile.TemporaryDirectory(prefix="sagewire-tls-") as tmp:
        root = Path(tmp)
        tls = ThrowawayTls(root / "ca.pem", root / "server.pem", root / "server.key")
        ca.cert_pem.write_to_path(str(tls.ca_file))
        server.private_key_pem.write_to_path(str(tls.key_file))
        tls.cert_file.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
        tls.key_file.chmod(0o600)
        yield tls
