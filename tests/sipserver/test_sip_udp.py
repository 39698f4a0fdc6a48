"""SIP over UDP adapter: responses leave by ``sendto`` on the port's socket."""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from sipserver.test_sip_stream import OPTIONS, EchoApp
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from gateway.sip import TimerSettings, TransactionLayer, Transport, parse_message
from gateway.sipserver.server import SipServer, SipUdpProtocol


@pytest.fixture
def peer() -> Iterator[socket.socket]:
    """A plain UDP socket on 127.0.0.1 standing in for the SIP core."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    yield sock
    sock.close()


@pytest.fixture
def server() -> Iterator[tuple[SipServer, SipUdpProtocol]]:
    """A SipServer whose UDP side is a real port on 127.0.0.1 (port 0)."""
    sip = SipServer(Clock(), TransactionLayer(TimerSettings()), 65_535)
    sip.app = EchoApp(sip)  # type: ignore[assignment]
    proto = SipUdpProtocol(sip)
    port = reactor.listenUDP(0, proto, interface="127.0.0.1")  # type: ignore[attr-defined]
    sip.udp = proto
    yield sip, proto
    port.stopListening()


def test_response_goes_to_the_requests_source(
    server: tuple[SipServer, SipUdpProtocol], peer: socket.socket
) -> None:
    """An OPTIONS received over UDP is answered to its source address with
    the 200 the application built."""
    sip, _ = server
    host, port = peer.getsockname()
    request = OPTIONS.replace(b"SIP/2.0/TCP 127.0.0.1:5070", b"SIP/2.0/UDP %s:%d")
    sip.receive(request % (host.encode(), port, 1, 1), Transport.UDP, (host, port))
    data, source = peer.recvfrom(65_535)
    response = parse_message(data)
    assert response.status == 200  # type: ignore[union-attr]
    assert response.header("Call-ID") == "o1"
    assert source[0] == "127.0.0.1"


def test_a_failed_send_is_counted_and_logged_not_raised(
    server: tuple[SipServer, SipUdpProtocol], peer: socket.socket
) -> None:
    """A response the socket refuses (an IPv6 peer on this IPv4 port) is lost
    alone: counted, logged, and the next request is answered."""
    sip, _ = server
    host, port = peer.getsockname()
    v6 = OPTIONS.replace(b"SIP/2.0/TCP 127.0.0.1:5070", b"SIP/2.0/UDP [::1]:5070")
    with capturedLogs() as events:
        sip.receive(v6 % (1, 1), Transport.UDP, ("::1", 5070))
    assert sip.stats["send_errors"] == 1
    assert [e["log_format"] for e in events] == [
        "SIP UDP send to {host}:{port} failed: {error}"
    ]
    request = OPTIONS.replace(b"SIP/2.0/TCP 127.0.0.1:5070", b"SIP/2.0/UDP %s:%d")
    sip.receive(request % (host.encode(), port, 2, 2), Transport.UDP, (host, port))
    data, _ = peer.recvfrom(65_535)
    assert parse_message(data).status == 200  # type: ignore[union-attr]


class _Socket:
    def __init__(self, error: OSError | None) -> None:
        self.error = error
        self.sent: list[tuple[bytes, Any]] = []

    def sendto(self, data: bytes, addr: Any) -> int:
        if self.error is not None:
            raise self.error
        self.sent.append((data, addr))
        return len(data)


class _Port:
    def __init__(self, sock: _Socket) -> None:
        self.sock = sock

    def getHandle(self) -> _Socket:
        return self.sock


def _protocol(sock: _Socket) -> SipUdpProtocol:
    proto = SipUdpProtocol(SipServer(Clock(), TransactionLayer(TimerSettings()), 1024))
    proto.transport = _Port(sock)  # type: ignore[assignment]
    return proto


def test_connection_refused_is_ignored_like_port_write() -> None:
    """An ICMP error left by an earlier datagram does not fail this send."""
    _protocol(_Socket(ConnectionRefusedError(errno.ECONNREFUSED, "refused"))).send(
        b"x", ("127.0.0.1", 5060)
    )


def test_other_socket_errors_reach_the_caller() -> None:
    """What else the socket raises propagates, as from ``Port.write``;
    ``SipServer._send`` counts and logs it."""
    proto = _protocol(_Socket(OSError(errno.EMSGSIZE, "Message too long")))
    with pytest.raises(OSError, match="too long"):
        proto.send(b"x", ("127.0.0.1", 5060))


def test_no_port_no_send() -> None:
    """Before the port is up (or after it is gone) nothing is sent."""
    proto = SipUdpProtocol(SipServer(Clock(), TransactionLayer(TimerSettings()), 1024))
    proto.send(b"x", ("127.0.0.1", 5060))
    sock = _Socket(None)
    _protocol(sock).send(b"datagram", ("127.0.0.1", 5060))
    assert sock.sent == [(b"datagram", ("127.0.0.1", 5060))]
