"""FastTLSProtocol behaves as Twisted's TLSMemoryBIOProtocol, only cheaper.

Each scenario runs against both the stock factory and ours over the same
in-memory client (pyOpenSSL memory BIOs) and must end the same way; the
direct socket send is checked over real loopback sockets.
"""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from OpenSSL import SSL
from twisted.internet import endpoints, protocol
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from gateway.localpush.tls import ServerTLS
from gateway.tls import FastTLSFactory, FastTLSProtocol

ADDR = IPv4Address("TCP", "127.0.0.2", 40000)
FACTORIES = [
    pytest.param(TLSMemoryBIOFactory, id="stock"),
    pytest.param(FastTLSFactory, id="device"),
]


@implementer(IHandshakeListener)
class Recorder(protocol.Protocol):
    """The wrapped application protocol: keeps what TLS hands it."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.deliveries = 0
        self.reason: Failure | None = None
        self.handshakes = 0

    def handshakeCompleted(self) -> None:
        self.handshakes += 1

    def dataReceived(self, data: bytes) -> None:
        self.deliveries += 1
        self.received += data

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.reason = reason


class AbortableTransport(StringTransport):
    """StringTransport with abortConnection (TLS calls it on some failures)."""

    def abortConnection(self) -> None:
        self.loseConnection()


class Pair:
    """Server TLS protocol from ``factory_class`` and an in-memory TLS client."""

    def __init__(self, factory_class: type[TLSMemoryBIOFactory], tls: ServerTLS):
        self.app = Recorder()
        wrapped = protocol.Factory.forProtocol(lambda: self.app)
        factory = factory_class(tls, False, wrapped, clock=Clock())
        self.clock = factory._clock
        self.server = factory.buildProtocol(ADDR)
        self.transport = AbortableTransport(peerAddress=ADDR)
        self.server.makeConnection(self.transport)
        self.client = SSL.Connection(SSL.Context(SSL.TLS_CLIENT_METHOD), None)
        self.client.set_connect_state()
        self.pump()
        assert self.app.handshakes == 1

    def pump(self) -> None:
        """Move bytes both ways until neither side has anything to say."""
        for _ in range(50):
            with contextlib.suppress(SSL.Error):
                self.client.do_handshake()
            moved = self.to_server(self.client_output())
            assert isinstance(self.clock, Clock)
            self.clock.advance(0)  # the stock class writes on the next turn
            data = self.transport.value()
            self.transport.clear()
            if data:
                self.client.bio_write(data)
                moved = True
            if not moved:
                return

    def client_output(self) -> bytes:
        out = b""
        while True:
            try:
                out += self.client.bio_read(65536)
            except SSL.WantReadError:
                return out

    def to_server(self, data: bytes, chunk: int = 0) -> bool:
        if not data:
            return False
        step = chunk or len(data)
        for i in range(0, len(data), step):
            self.server.dataReceived(data[i : i + step])
        return True

    def client_received(self) -> bytes:
        out = b""
        while True:
            try:
                out += self.client.recv(65536)
            except (SSL.WantReadError, SSL.ZeroReturnError):
                return out


@pytest.fixture
def server_tls(tls_pair: tuple[Path, Path]) -> ServerTLS:
    return ServerTLS(*tls_pair)


def test_factory_builds_device_protocol(server_tls: ServerTLS) -> None:
    """FastTLSFactory wraps connections in FastTLSProtocol."""
    pair = Pair(FastTLSFactory, server_tls)
    assert isinstance(pair.server, FastTLSProtocol)


@pytest.mark.parametrize("factory_class", FACTORIES)
@pytest.mark.parametrize("chunk", [0, 1, 7, 1000])
def test_records_in_any_chunks(
    factory_class: type[TLSMemoryBIOFactory], chunk: int, server_tls: ServerTLS
) -> None:
    """Many records of many sizes, fed whole or cut anywhere, arrive in order."""
    pair = Pair(factory_class, server_tls)
    sent = b""
    for size in (1, 50, 16384, 3, 40000, 2):
        piece = bytes([size % 251]) * size
        pair.client.sendall(piece)
        sent += piece
    pair.to_server(pair.client_output(), chunk)
    assert bytes(pair.app.received) == sent


def test_records_of_one_read_arrive_together(server_tls: ServerTLS) -> None:
    """Ten records in one read reach the protocol as one chunk, in order (the
    stock class delivers ten), so it handles and answers them once."""
    pair = Pair(FastTLSFactory, server_tls)
    for n in range(10):
        pair.client.send(b"message %d;" % n)
    pair.to_server(pair.client_output())
    assert bytes(pair.app.received) == b"".join(b"message %d;" % n for n in range(10))
    assert pair.app.deliveries == 1


def test_records_before_close_notify_arrive_together(server_tls: ServerTLS) -> None:
    """Records then close_notify in one read: the records in one chunk, then
    the shutdown handled as the stock class handles it."""
    pair = Pair(FastTLSFactory, server_tls)
    pair.client.send(b"one;")
    pair.client.send(b"two;")
    with contextlib.suppress(SSL.Error):
        pair.client.shutdown()
    pair.to_server(pair.client_output())
    assert bytes(pair.app.received) == b"one;two;"
    assert pair.app.deliveries == 1
    assert pair.transport.disconnecting


@pytest.mark.parametrize("factory_class", FACTORIES)
@pytest.mark.parametrize("size", [1, 300, 16384, 16385, 100_000])
def test_writes_of_any_size(
    factory_class: type[TLSMemoryBIOFactory], size: int, server_tls: ServerTLS
) -> None:
    """Writes below, at and above one record reach the client intact."""
    pair = Pair(factory_class, server_tls)
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    pair.server.write(data)
    pair.server.write(b"tail")
    pair.pump()
    assert pair.client_received() == data + b"tail"


@pytest.mark.parametrize("factory_class", FACTORIES)
def test_close_notify_from_client(
    factory_class: type[TLSMemoryBIOFactory], server_tls: ServerTLS
) -> None:
    """Data then close_notify: the data is delivered and the server answers
    the shutdown and closes its transport, as Twisted does."""
    pair = Pair(factory_class, server_tls)
    pair.client.send(b"last words")
    with contextlib.suppress(SSL.Error):
        pair.client.shutdown()
    pair.to_server(pair.client_output())
    pair.clock.advance(0)
    assert bytes(pair.app.received) == b"last words"
    assert pair.transport.disconnecting
    pair.server.connectionLost(Failure(protocol.connectionDone.value))
    assert pair.app.reason is not None


@pytest.mark.parametrize("factory_class", FACTORIES)
def test_garbage_after_handshake(
    factory_class: type[TLSMemoryBIOFactory], server_tls: ServerTLS
) -> None:
    """A record that does not decrypt fails the connection: transport closed,
    nothing delivered, an SSL error reported to the application."""
    pair = Pair(factory_class, server_tls)
    pair.server.dataReceived(b"\x17\x03\x03\x00\x20" + b"\x00" * 32)
    assert pair.app.received == b""
    assert pair.transport.disconnecting
    pair.server.connectionLost(Failure(protocol.connectionDone.value))
    assert pair.app.reason is not None and pair.app.reason.check(SSL.Error)


@pytest.mark.parametrize("factory_class", FACTORIES)
def test_eof_mid_record(
    factory_class: type[TLSMemoryBIOFactory], server_tls: ServerTLS
) -> None:
    """The socket closes inside a record: the partial record is dropped and the
    application hears connectionLost once."""
    pair = Pair(factory_class, server_tls)
    pair.client.send(b"complete")
    pair.client.send(b"cut short")
    data = pair.client_output()
    pair.server.dataReceived(data[:-5])
    assert bytes(pair.app.received) == b"complete"
    pair.server.connectionLost(Failure(protocol.connectionDone.value))
    assert pair.app.reason is not None


class Sink(protocol.Protocol):
    """Client side over real TLS: collects bytes; can pause reading."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.deliveries = 0
        self.want = 0
        self.done: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.deliveries += 1
        self.received += data
        if self.want and len(self.received) >= self.want and not self.done.called:
            self.done.callback(None)


@pytest.mark.integration
@pytest_twisted.inlineCallbacks
def test_direct_send_with_a_slow_reader(tls_pair: tuple[Path, Path]) -> Any:
    """Over real sockets: writes go straight to an idle socket; once the socket
    buffer is full the rest queues in the transport, in order, and all of it
    arrives when the client reads again."""
    from twisted.internet import reactor

    servers: list[protocol.Protocol] = []

    class Writer(protocol.Protocol):
        def dataReceived(self, data: bytes) -> None:
            servers.append(self)  # TLS is up on the server side too

    factory = FastTLSFactory(
        ServerTLS(*tls_pair), False, protocol.Factory.forProtocol(Writer)
    )
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    try:
        options = optionsForClientTLS(
            "localhost", trustRoot=Certificate.loadPEM(tls_pair[0].read_bytes())
        )
        endpoint = endpoints.SSL4ClientEndpoint(
            reactor, "127.0.0.1", port.getHost().port, options
        )
        sink = Sink()
        client = yield endpoints.connectProtocol(endpoint, sink)
        client.transport.write(b"hi")  # completes the handshake on both sides
        while not servers:
            yield _turn(reactor)
        server = servers[0]
        tcp = server.transport.transport  # the socket under TLS
        tcp.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        client.transport.transport.socket.setsockopt(
            socket.SOL_SOCKET, socket.SO_RCVBUF, 4096
        )
        client.transport.pauseProducing()
        sent = []
        for i in range(2000):  # at most ~60 MB: the kernel buffers fill long before
            chunk = bytes([i % 251]) * (30_000 + i)
            server.transport.write(chunk)
            sent.append(chunk)
            if tcp.dataBuffer or tcp._tempDataBuffer:
                break
        assert tcp.dataBuffer or tcp._tempDataBuffer  # the rest waits in order
        server.transport.write(b"end")
        expected = b"".join(sent) + b"end"
        sink.want = len(expected)
        client.transport.resumeProducing()
        yield sink.done.addTimeout(10, reactor)
        assert bytes(sink.received) == expected
        client.transport.loseConnection()
    finally:
        yield port.stopListening()


def _turn(reactor: Any) -> Deferred[None]:
    d: Deferred[None] = Deferred()
    reactor.callLater(0.01, d.callback, None)
    return d
