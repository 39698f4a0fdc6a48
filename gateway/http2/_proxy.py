"""HTTP CONNECT tunnel, then TLS through it.

Some deployments reach APNs only through an egress proxy. We open TCP to the
proxy, ask for ``CONNECT host:port``, and once it answers 2xx start a
``TLSMemoryBIOProtocol`` on the same socket; after that this protocol only
forwards bytes and the connection's end.
"""

from __future__ import annotations

from twisted.internet.interfaces import (
    IAddress,
    IOpenSSLClientConnectionCreator,
    IProtocol,
)
from twisted.internet.protocol import Factory, connectionDone
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.python.failure import Failure

from gateway.http2._errors import ProxyConnectError
from gateway.http2._protocol import H2ClientProtocol
from gateway.tls import FastTLSFactory

__all__ = ["TunnelProtocol"]

_MAX_PROXY_HEAD = 16 * 1024


class _Just(Factory):
    """Factory that hands out one prepared protocol (TLS wraps it)."""

    def __init__(self, protocol: H2ClientProtocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: IAddress | None) -> H2ClientProtocol:
        """Return the prepared protocol."""
        return self._protocol


class TunnelProtocol(TwistedProtocol):
    """Speaks CONNECT to the proxy, then carries TLS for ``inner``."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        tls: IOpenSSLClientConnectionCreator,
        inner: H2ClientProtocol,
    ) -> None:
        self._target = f"{_bracket(host)}:{port}".encode("ascii")
        self._tls_factory = FastTLSFactory(tls, True, _Just(inner))
        self._inner = inner
        self._buffer = b""
        self._tls: IProtocol | None = None

    def connectionMade(self) -> None:
        """Ask the proxy for a tunnel."""
        self._inner.tunnel = self
        assert self.transport is not None
        self.transport.write(
            b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (self._target, self._target)
        )

    def dataReceived(self, data: bytes) -> None:
        """Read the proxy's answer, then pass everything to TLS."""
        if self._tls is not None:
            self._tls.dataReceived(data)
            return
        self._buffer += data
        head, sep, rest = self._buffer.partition(b"\r\n\r\n")
        if not sep:
            if len(self._buffer) > _MAX_PROXY_HEAD:
                self._fail("proxy response head too large")
            return
        status_line = head.split(b"\r\n", 1)[0]
        parts = status_line.split(b" ", 2)
        if (
            len(parts) < 2
            or not parts[0].startswith(b"HTTP/")
            or not parts[1].isdigit()
        ):
            self._fail(f"proxy sent a malformed status line {status_line[:80]!r}")
            return
        status = int(parts[1])
        if not 200 <= status < 300:
            self._fail(
                f"proxy refused CONNECT {self._target.decode()}: {status_line[:80]!r}"
            )
            return
        self._buffer = b""
        assert self.transport is not None
        tls: IProtocol = self._tls_factory.buildProtocol(self.transport.getPeer())
        self._tls = tls
        tls.makeConnection(self.transport)
        if rest:
            tls.dataReceived(rest)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Pass the end on to TLS, or report a tunnel that never opened."""
        if self._tls is not None:
            self._tls.connectionLost(reason)
        else:
            self._inner.never_connected(
                ProxyConnectError(
                    f"proxy closed before the tunnel opened: {reason.getErrorMessage()}"
                )
            )

    def _fail(self, message: str) -> None:
        self._inner.fail_connect(ProxyConnectError(message))


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host
