"""Server TLS for the device socket: modern settings, small idle sessions, reload.

Thousands of mostly idle device sessions stay connected, so OpenSSL's
release-buffers mode matters (each idle connection frees its ~34 KiB of read
and write buffers). ``reload`` swaps the certificate for future connections
(e.g. on SIGHUP after a renewal) without touching established ones.

Sessions are wrapped by ``gateway.tls.FastTLSFactory`` (see ``server.py``),
Twisted's TLS with a cheaper record path.
"""

from __future__ import annotations

from pathlib import Path

from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOProtocol
from zope.interface import implementer

__all__ = [
    "CIPHERS",
    "ServerTLS",
    "make_context",
]

# TLS 1.2 suites: forward secret AEAD only. TLS 1.3 suites are all acceptable
# and keep OpenSSL's defaults.
CIPHERS = b"ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!MD5:!DSS:!SHA1"


def make_context(cert_path: Path, key_path: Path) -> SSL.Context:
    """A server context from PEM files; raises SSL.Error/OSError if unusable."""
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    ctx.set_options(
        SSL.OP_NO_COMPRESSION
        | SSL.OP_CIPHER_SERVER_PREFERENCE
        | SSL.OP_NO_RENEGOTIATION
        | SSL.OP_SINGLE_ECDH_USE
    )
    ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)
    ctx.set_cipher_list(CIPHERS)
    ctx.use_certificate_chain_file(str(cert_path))
    ctx.use_privatekey_file(str(key_path))
    ctx.check_privatekey()
    return ctx


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS:
    """Connection creator for TLSMemoryBIOFactory whose cert can be reloaded."""

    log = Logger()

    def __init__(self, cert_path: Path, key_path: Path) -> None:
        self._cert_path = cert_path
        self._key_path = key_path
        self._context = make_context(cert_path, key_path)

    def reload(
        self, cert_path: Path | None = None, key_path: Path | None = None
    ) -> None:
        """Load a new cert/key for future connections; on error keep the old one."""
        cert = cert_path or self._cert_path
        key = key_path or self._key_path
        context = make_context(cert, key)  # raises before anything is replaced
        self._context, self._cert_path, self._key_path = context, cert, key
        self.log.info("Device TLS certificate loaded from {path}", path=str(cert))

    def getContext(self) -> SSL.Context:
        """The current context (for APIs that take an old-style context factory)."""
        return self._context

    def serverConnectionForTLS(
        self, tlsProtocol: TLSMemoryBIOProtocol
    ) -> SSL.Connection:
        """A server-side connection on the current context."""
        return SSL.Connection(self._context, None)
