"""Twisted's TLS (pyOpenSSL over memory BIOs) with a cheaper record path.

Every TLS connection of the gateway goes through here: the device sockets
(every session pings every 30 s, and the stock path spent more CPU per ping
than the rest of the gateway), the simulated devices, and the HTTP/2
connection to APNs (thousands of small records a second, where the stock
path's ``callLater(0)`` per write and the writability round trip before each
send were a reactor turn per batch of pushes).
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.bindings.openssl.binding import Binding
from OpenSSL import SSL
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
    ITransport,
)
from twisted.internet.tcp import Connection as TCPConnection
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = ["FastTLSFactory", "FastTLSProtocol", "TLSClientEndpoint"]

# The OpenSSL binding pyOpenSSL itself calls (one library instance per process).
_binding = Binding()
_lib: Any = _binding.lib
_ffi: Any = _binding.ffi
_WANT_READ: int = _lib.SSL_ERROR_WANT_READ
# One read buffer of each kind for all connections: the reactor is one thread
# and every read is copied out before the next. SSL_read returns at most one
# record (16 KiB of plaintext); the send BIO is drained in chunks.
_RECORD_MAX = 1 << 14
_SEND_CHUNK = 1 << 15
_read_buf: Any = _ffi.new("char[]", _RECORD_MAX)
_send_buf: Any = _ffi.new("char[]", _SEND_CHUNK)


class FastTLSProtocol(TLSMemoryBIOProtocol):
    """``TLSMemoryBIOProtocol`` with the per-record overhead taken out.

    What the stock class does per received record, and this one does not:
    allocate a 32 KiB buffer for every ``recv``/``bio_read``, end every read
    loop and every send-BIO flush with a ``WantReadError`` raised and caught,
    and (as ``BufferingTLSTransport``, which ``TLSMemoryBIOFactory`` builds)
    postpone each write to a ``callLater(0)``. Here records go in and out
    through OpenSSL's calls on reused buffers, stopping on
    ``SSL_ERROR_WANT_READ`` without an exception; writes go out at once (the
    adapter writes one joined buffer per batch); and TLS bytes are handed to
    the socket directly when nothing is queued ahead of them (Twisted would
    register for writability and send on the next reactor turn: two
    ``epoll_ctl`` calls and a pass through the reactor for every pong).
    Everything else (the handshake, writes over one record, close_notify,
    errors, a full socket) goes to the stock code, which handles it as before.
    """

    _direct = False

    def makeConnection(self, transport: ITransport) -> None:
        """Note whether ``transport`` is a socket we may write to directly."""
        self._direct = isinstance(transport, TCPConnection)
        super().makeConnection(transport)  # type: ignore[no-untyped-call]

    def dataReceived(self, data: bytes) -> None:
        """Put TLS bytes into OpenSSL and deliver what they decrypt to."""
        if not self._handshakeDone or self._appSendBuffer:
            super().dataReceived(data)  # type: ignore[no-untyped-call]
            return
        if _lib.BIO_write(self._tlsConnection._into_ssl, data, len(data)) <= 0:
            # only after bio_shutdown; pyOpenSSL raises what Twisted expects
            self._tlsConnection.bio_write(data)
        self._flushReceiveBIO()

    def _flushReceiveBIO(self) -> None:
        """Deliver every record decrypted from this read as one chunk, then
        flush what OpenSSL queued.

        One ``dataReceived`` per socket read, not per record: a peer that
        writes each message as its own record (an HTTP/2 server sending each
        response as it is ready) would otherwise make the protocol above
        handle, and answer with a write and a ``send``, each record apart.
        """
        ssl = self._tlsConnection._ssl
        chunks: list[bytes] = []
        failed = False
        while not self._lostTLSConnection:
            n = _lib.SSL_read(ssl, _read_buf, _RECORD_MAX)
            if n > 0:
                chunks.append(_ffi.buffer(_read_buf, n)[:])
                continue
            # close_notify or an error: OpenSSL reports it again on the next
            # read, which the stock loop turns into the right outcome.
            failed = _lib.SSL_get_error(ssl, n) != _WANT_READ
            break
        if chunks and not self._aborted:
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            self.wrappedProtocol.dataReceived(data)
        if failed:
            super()._flushReceiveBIO()  # type: ignore[no-untyped-call]
            return
        self._flushSendBIO()

    def _flushSendBIO(self) -> None:
        """Move the TLS bytes OpenSSL produced to the socket."""
        bio = self._tlsConnection._from_ssl
        n = _lib.BIO_read(bio, _send_buf, _SEND_CHUNK)
        if n <= 0:
            return
        data = _ffi.buffer(_send_buf, n)[:]
        if n == _SEND_CHUNK:
            parts = [data]
            while n == _SEND_CHUNK:
                n = _lib.BIO_read(bio, _send_buf, _SEND_CHUNK)
                if n > 0:
                    parts.append(_ffi.buffer(_send_buf, n)[:])
            data = b"".join(parts)
        transport: Any = self.transport
        if (
            self._direct
            and not transport.dataBuffer
            and not transport._tempDataBuffer
            and transport.connected
            and not transport.disconnecting
        ):
            # What Twisted's doWrite would do on the next turn; whatever the
            # socket does not take (or an error) goes to transport.write,
            # which queues it in order and reports errors as usual.
            try:
                sent = transport.socket.send(data)
            except OSError:
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        transport.write(data)

    def _write(self, data: bytes) -> None:
        """Encrypt one write of up to a record in one ``SSL_write``."""
        if len(data) > _RECORD_MAX or not data or self._lostTLSConnection:
            super()._write(data)  # type: ignore[no-untyped-call]
            return
        conn = self._tlsConnection
        sent = _lib.SSL_write(conn._ssl, _ffi.from_buffer(data), len(data))
        if sent <= 0:
            # Retried through pyOpenSSL (as OpenSSL asks: same bytes again),
            # which raises what the stock code expects.
            try:
                sent = conn.send(data)
            except SSL.WantReadError:
                self._bufferedWrite(data)  # type: ignore[no-untyped-call]
                return
            except SSL.Error:
                self._tlsShutdownFinished(Failure())  # type: ignore[no-untyped-call]
                return
        self._flushSendBIO()
        if sent < len(data):
            super()._write(data[sent:])  # type: ignore[no-untyped-call]


class FastTLSFactory(TLSMemoryBIOFactory):
    """TLS wrapping that builds ``FastTLSProtocol``: the device server, the
    simulated devices' side of it and the APNs client (``isClient``)."""

    protocol = FastTLSProtocol


@implementer(IStreamClientEndpoint)
class TLSClientEndpoint:
    """``wrapClientTLS`` with ``FastTLSFactory``: the same TLS, with the
    cheaper per-record path."""

    def __init__(
        self,
        creator: IOpenSSLClientConnectionCreator,
        endpoint: IStreamClientEndpoint,
        clock: IReactorTime | None = None,
    ) -> None:
        self._creator = creator
        self._endpoint = endpoint
        self._clock = clock

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        """Connect the wrapped endpoint; fire with ``factory``'s protocol."""
        tls = FastTLSFactory(self._creator, True, factory, self._clock)
        d: Deferred[Any] = self._endpoint.connect(tls)
        return d.addCallback(lambda wrapper: wrapper.wrappedProtocol)
