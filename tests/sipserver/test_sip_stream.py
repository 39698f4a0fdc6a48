"""SIP over TCP/TLS adapter: framing, keep-alive, limits, slow peers."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from gateway.sip import TimerSettings, TransactionLayer, Transport, parse_message
from gateway.sipserver.server import (
    PARTIAL_MESSAGE_TIMEOUT_S,
    SipServer,
    SipStreamFactory,
    SipStreamProtocol,
)

OPTIONS = (
    b"OPTIONS sip:gw@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK-%d\r\n"
    b"From: <sip:a@b>;tag=1\r\nTo: <sip:gw@127.0.0.1>\r\nCall-ID: o%d\r\n"
    b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)


class EchoApp:
    """Answers every request 200, so the stream path can be watched."""

    def __init__(self, server: SipServer) -> None:
        self.server = server
        self.seen: list[str] = []

    def handle(self, key: object, request: object, source: object) -> None:
        from gateway.sip import build_response

        self.seen.append(request.call_id)  # type: ignore[attr-defined]
        self.server.respond(key, build_response(request, 200, to_tag="t"))  # type: ignore[arg-type]


def _connect(
    max_connections: int = 10, idle: float = 300.0
) -> tuple[Clock, SipStreamFactory, EchoApp]:
    clock = Clock()
    server = SipServer(clock, TransactionLayer(TimerSettings()), 65_535)
    app = EchoApp(server)
    server.app = app  # type: ignore[assignment]
    factory = SipStreamFactory(
        server,
        Transport.TCP,
        clock,
        idle_timeout_s=idle,
        max_connections=max_connections,
    )
    return clock, factory, app


def _open(factory: SipStreamFactory) -> tuple[SipStreamProtocol, StringTransport]:
    proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5070))
    assert isinstance(proto, SipStreamProtocol)
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5070))
    proto.makeConnection(transport)
    return proto, transport


def _statuses(transport: StringTransport) -> list[int]:
    data, out = transport.value(), []
    while data:
        head, _, data = data.partition(b"\r\n\r\n")
        message = parse_message(head + b"\r\n\r\n")
        out.append(message.status)  # type: ignore[union-attr]
    return out


def test_connection_turns_nagle_off() -> None:
    """A 180 written right after the 100 must not wait for the core's delayed
    ACK of the 100."""
    _, factory, _ = _connect()
    calls: list[bool] = []
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5070))
    transport.setTcpNoDelay = calls.append  # type: ignore[attr-defined]
    proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5070))
    assert proto is not None
    proto.makeConnection(transport)
    assert calls == [True]


def test_two_messages_in_one_write_and_one_split_bytewise() -> None:
    """Content-Length framing: any chunking yields the same requests."""
    _, factory, app = _connect()
    proto, transport = _open(factory)
    proto.dataReceived(OPTIONS % (1, 1) + OPTIONS % (2, 2))
    for byte in OPTIONS % (3, 3):
        proto.dataReceived(bytes([byte]))
    assert app.seen == ["o1", "o2", "o3"]
    assert _statuses(transport) == [200, 200, 200]


def test_crlf_keepalive_answered() -> None:
    """RFC 5626 double-CRLF ping gets a CRLF pong."""
    _, factory, _ = _connect()
    proto, transport = _open(factory)
    proto.dataReceived(b"\r\n\r\n")
    assert transport.value() == b"\r\n"


def test_huge_content_length_cut_off_at_once() -> None:
    """A 10 MB Content-Length is refused on the header: connection closed."""
    _, factory, app = _connect()
    proto, transport = _open(factory)
    head = (OPTIONS % (1, 1)).replace(b"Content-Length: 0", b"Content-Length: 10485760")
    proto.dataReceived(head)
    assert transport.disconnecting
    assert app.seen == []
    assert factory.server.stats["bad"] == 1


def test_slow_loris_closed_after_partial_timeout() -> None:
    """A message that never completes is closed after the partial timeout."""
    clock, factory, _ = _connect()
    proto, transport = _open(factory)
    proto.dataReceived(b"OPTIONS sip:gw@127.0.0.1 SIP/2.0\r\nVia: ")
    clock.advance(PARTIAL_MESSAGE_TIMEOUT_S - 1)
    proto.dataReceived(b"S")
    assert not transport.disconnecting
    clock.advance(1)
    assert transport.disconnecting


def test_idle_connection_closed_and_activity_keeps_it() -> None:
    """No complete message for the idle timeout: closed."""
    clock, factory, _ = _connect(idle=60)
    proto, transport = _open(factory)
    clock.advance(50)
    proto.dataReceived(OPTIONS % (1, 1))
    clock.advance(50)
    assert not transport.disconnecting
    clock.advance(10)
    assert transport.disconnecting


def test_connection_limit() -> None:
    """Past max_connections new connections are refused; closing frees a slot."""
    _, factory, _ = _connect(max_connections=1)
    proto, _ = _open(factory)
    assert factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1)) is None
    proto.connectionLost(None)
    assert factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1)) is not None


def test_response_to_closed_connection_is_counted_not_raised() -> None:
    """If the peer left before we answer, the response is dropped and counted."""
    _, factory, app = _connect()
    proto, transport = _open(factory)
    proto.connected = False
    proto.dataReceived(OPTIONS % (1, 1))
    assert app.seen == ["o1"]
    assert transport.value() == b""
    assert factory.server.stats["unroutable"] == 1
