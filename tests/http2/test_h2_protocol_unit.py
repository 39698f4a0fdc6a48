"""H2ClientProtocol and the agent's host pool on StringTransport and task.Clock.

Keep-alive PING, idle close, ALPN checking, connect backoff and connect
timeout, without sockets or real time.
"""

from __future__ import annotations

from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import INegotiated
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.client import URI
from twisted.web.error import SchemeNotSupported
from twisted.web.http_headers import Headers
from zope.interface import implementer

from gateway.http2 import ConnectFailedError, H2Agent, NegotiationError
from gateway.http2._exchange import Exchange
from gateway.http2._protocol import ConnectionSettings, H2ClientProtocol
from gateway.http2._response import H2ClientRequest


@implementer(INegotiated)
class NegotiatedTransport(StringTransport):
    """StringTransport that reports an ALPN result."""

    def __init__(self, protocol: bytes | None = b"h2") -> None:
        super().__init__()
        self.negotiatedProtocol = protocol
        self.no_delay: bool | None = None

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.no_delay = enabled


class Owner:
    """Records what the connection tells its pool."""

    def __init__(self) -> None:
        self.unusable: list[H2ClientProtocol] = []
        self.closed: list[tuple[H2ClientProtocol, bool]] = []
        self.retried: list[Any] = []

    def connection_unusable(self, connection: H2ClientProtocol) -> None:
        self.unusable.append(connection)

    def connection_closed(self, connection: H2ClientProtocol, healthy: bool) -> None:
        self.closed.append((connection, healthy))

    def retry(self, exchange: Any, error: Any) -> None:
        self.retried.append(exchange)


def connected(
    alpn: bytes | None = b"h2", **settings: Any
) -> tuple[
    H2ClientProtocol, NegotiatedTransport, h2.connection.H2Connection, Clock, Owner
]:
    """A protocol after TLS and the SETTINGS exchange with an h2 server."""
    clock = Clock()
    owner = Owner()
    proto = H2ClientProtocol(
        clock=clock,
        owner=owner,
        settings=ConnectionSettings(**settings),
        peer="apns:443",
    )
    transport = NegotiatedTransport(alpn)
    proto.makeConnection(transport)
    proto.handshakeCompleted()
    server = h2.connection.H2Connection(
        config=h2.config.H2Configuration(client_side=False)
    )
    server.initiate_connection()
    if alpn == b"h2":
        server.receive_data(transport.value())
        transport.clear()
        proto.dataReceived(server.data_to_send())
        server.receive_data(transport.value())
        transport.clear()
    return proto, transport, server, clock, owner


def test_nagle_off_once_h2_is_negotiated() -> None:
    """Requests leave in the turn they are made, not after APNs' delayed
    ACK for the previous write."""
    _, transport, _, _, _ = connected()
    assert transport.no_delay is True


def test_keepalive_ping_after_quiet_period() -> None:
    """After ping_interval with nothing received, a PING goes out; its ACK keeps the connection."""
    proto, transport, server, clock, _ = connected(ping_interval=10.0, ping_timeout=5.0)
    clock.advance(9)
    assert transport.value() == b""
    clock.advance(1)
    events = server.receive_data(transport.value())
    transport.clear()
    assert any(isinstance(e, h2.events.PingReceived) for e in events)
    proto.dataReceived(server.data_to_send())  # the ACK
    clock.advance(5)
    assert not transport.disconnecting


def test_no_ping_while_frames_arrive() -> None:
    """Traffic from the server postpones the keep-alive PING."""
    proto, transport, server, clock, _ = connected(ping_interval=10.0)
    clock.advance(8)
    server.ping(b"12345678")
    proto.dataReceived(server.data_to_send())
    transport.clear()
    clock.advance(5)
    assert not any(
        isinstance(e, h2.events.PingReceived)
        for e in server.receive_data(transport.value())
    )


def test_unanswered_ping_aborts() -> None:
    """A PING without ACK within ping_timeout aborts the connection."""
    _, transport, _, clock, _ = connected(ping_interval=10.0, ping_timeout=5.0)
    clock.advance(10)
    assert not transport.disconnecting
    clock.advance(5)
    assert transport.disconnecting


def test_idle_close() -> None:
    """With no request in flight for idle_timeout, the connection sends GOAWAY and closes."""
    proto, transport, server, clock, owner = connected(
        ping_interval=None, idle_timeout=30.0
    )
    clock.advance(29)
    assert not transport.disconnecting
    clock.advance(1)
    assert transport.disconnecting
    events = server.receive_data(transport.value())
    assert any(isinstance(e, h2.events.ConnectionTerminated) for e in events)
    assert owner.unusable == [proto]


def test_no_alpn_h2_fails_setup() -> None:
    """If ALPN did not pick h2, ``ready`` fails with NegotiationError and nothing is sent."""
    proto, transport, _, _, _ = connected(alpn=b"http/1.1")
    failure = []
    proto.ready.addErrback(failure.append)
    assert failure[0].check(NegotiationError)
    assert transport.value() == b""
    assert transport.disconnecting


class ScriptedAgent(H2Agent):
    """Agent whose connection attempts are scripted instead of using TCP."""

    def __init__(self, clock: Clock, outcomes: list[Any], **kw: Any) -> None:
        super().__init__(clock, ping_interval=None, request_timeout=None, **kw)  # type: ignore[arg-type]
        self.outcomes = outcomes
        self.attempts: list[float] = []

    def open_connection(
        self, host: str, port: int, protocol: H2ClientProtocol
    ) -> Deferred[Any]:
        self.attempts.append(self.clock.seconds())
        outcome = self.outcomes.pop(0)
        if outcome == "refuse":
            return fail(ConnectionRefusedError("refused"))
        return Deferred()  # hangs: a black-holed SYN


def test_reconnect_backoff() -> None:
    """Failed connects back off: later requests wait backoff(n) seconds before the next attempt."""
    clock = Clock()
    agent = ScriptedAgent(clock, ["refuse"] * 3, backoff=lambda n: 2.0**n)
    d1 = agent.request(b"GET", b"https://apns.example/")
    errors: list[Any] = []
    d1.addErrback(errors.append)
    assert errors[0].check(ConnectFailedError)
    d2 = agent.request(b"GET", b"https://apns.example/")
    d2.addErrback(errors.append)
    assert agent.attempts == [0.0]
    clock.advance(1.9)
    assert agent.attempts == [0.0]
    clock.advance(0.1)
    assert agent.attempts == [0.0, 2.0]
    assert errors[1].check(ConnectFailedError)
    agent.request(b"GET", b"https://apns.example/").addErrback(errors.append)
    clock.advance(4)
    assert agent.attempts == [0.0, 2.0, 6.0]
    assert len(errors) == 3


def test_connect_timeout() -> None:
    """A connect attempt that never completes fails the request after connect_timeout."""
    clock = Clock()
    agent = ScriptedAgent(clock, ["hang"], connect_timeout=5.0)
    errors: list[Any] = []
    agent.request(b"GET", b"https://apns.example/").addErrback(errors.append)
    clock.advance(4.9)
    assert errors == []
    clock.advance(0.1)
    assert errors[0].check(ConnectFailedError)
    assert "longer than 5.0s" in str(errors[0].value)


def test_close_while_connecting() -> None:
    """close() during a connect attempt fails the waiting request and fires."""
    clock = Clock()
    agent = ScriptedAgent(clock, ["hang"])
    errors: list[Any] = []
    agent.request(b"GET", b"https://apns.example/").addErrback(errors.append)
    done: list[Any] = []
    agent.close().addCallback(done.append)
    assert done == [None]
    assert len(errors) == 1


def test_late_handshake_after_failed_setup_is_ignored() -> None:
    """A TLS handshake finishing after set-up already failed (timeout) neither raises nor sends."""
    clock = Clock()
    proto = H2ClientProtocol(
        clock=clock, owner=Owner(), settings=ConnectionSettings(), peer="apns:443"
    )
    transport = NegotiatedTransport()
    proto.makeConnection(transport)
    failures: list[Any] = []
    proto.ready.addErrback(failures.append)
    proto.fail_connect(ConnectFailedError("took too long"))
    proto.handshakeCompleted()
    proto.dataReceived(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    assert len(failures) == 1
    assert transport.value() == b""


class RecordingAgent(H2Agent):
    """Agent that records what it would send instead of connecting."""

    def __init__(self) -> None:
        super().__init__(Clock(), ping_interval=None, request_timeout=None)  # type: ignore[arg-type]
        self.sent: list[tuple[str, int, list[tuple[bytes, bytes]]]] = []

    def _dispatch(self, exchange: Any, host: str, port: int) -> None:
        self.sent.append((host, port, exchange.h2_headers))


@pytest.mark.parametrize(
    "uri",
    [
        b"https://api.push.apple.com/3/device/abc",
        b"https://api.push.apple.com:443/3/device/abc",
        b"https://127.0.0.1:8443/3/device/abc?x=1&y=%20",
        b"https://api.push.apple.com",
        b"https://api.push.apple.com?q=1",
        b"https://api.push.apple.com/a#frag",
        b"https://API.Push.Apple.com:2197/a/b;p?q",
        b"https://[::1]:8443/x",
    ],
)
def test_request_target_and_authority_as_urllib_parses_them(uri: bytes) -> None:
    """Host, port, :authority and :path are what a full URI.fromBytes parse gives,
    for the first request to an origin and for later (cached) ones."""
    parsed = URI.fromBytes(uri)
    port = parsed.port
    expected = (
        parsed.host.decode("idna"),
        port,
        [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (
                b":authority",
                parsed.host if port == 443 else b"%s:%d" % (parsed.host, port),
            ),
            (b":path", parsed.originForm),
        ],
    )
    agent = RecordingAgent()
    agent.request(b"GET", uri)
    agent.request(b"GET", uri)
    assert agent.sent == [expected, expected]


def test_plain_http_is_refused() -> None:
    """The agent speaks HTTP/2 over TLS only."""
    agent = RecordingAgent()
    errors: list[Any] = []
    agent.request(b"GET", b"http://api.push.apple.com/").addErrback(errors.append)
    assert errors[0].check(SchemeNotSupported)
    assert agent.sent == []


def test_request_fields_lower_cased_and_connection_fields_dropped() -> None:
    """Caller headers follow the pseudo-header fields, lower-cased; host,
    connection-specific fields, and content-length are not sent (RFC 9113 8.2.2, 8.3)."""
    agent = RecordingAgent()
    headers = Headers(
        {
            b"Host": [b"evil.example"],
            b"Connection": [b"keep-alive"],
            b"Transfer-Encoding": [b"chunked"],
            b"Content-Length": [b"99"],
            b"APNs-Topic": [b"com.example.phone.voip"],
            b"X-Two": [b"a", b"b"],
        }
    )
    agent.request(b"POST", b"https://api.push.apple.com/3/device/abc", headers)
    ((_, _, sent),) = agent.sent
    assert sent == [
        (b":method", b"POST"),
        (b":scheme", b"https"),
        (b":authority", b"api.push.apple.com"),
        (b":path", b"/3/device/abc"),
        (b"apns-topic", b"com.example.phone.voip"),
        (b"x-two", b"a"),
        (b"x-two", b"b"),
    ]


def _exchange(clock: Clock, path: bytes) -> Exchange:
    fields = [
        (b":method", b"POST"),
        (b":scheme", b"https"),
        (b":authority", b"apns"),
        (b":path", path),
    ]
    return Exchange(
        clock=clock,
        request=H2ClientRequest(b"POST", b"https://apns" + path, fields),
        h2_headers=fields,
        timeout=None,
    )


class CountingTransport(NegotiatedTransport):
    """Counts writes: each is a TLS record and a send on a real connection."""

    writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        super().write(data)


def test_requests_started_by_a_response_go_out_with_its_batch() -> None:
    """A request submitted outside a read is written at once; requests
    submitted while a received batch is handled (the next push, from a
    response's callback) leave in the one write that ends the batch."""
    clock = Clock()
    proto = H2ClientProtocol(
        clock=clock, owner=Owner(), settings=ConnectionSettings(), peer="apns:443"
    )
    transport = CountingTransport()
    proto.makeConnection(transport)
    proto.handshakeCompleted()
    server = h2.connection.H2Connection(
        config=h2.config.H2Configuration(client_side=False)
    )
    server.initiate_connection()
    server.receive_data(transport.value())
    transport.clear()
    proto.dataReceived(server.data_to_send())
    server.receive_data(transport.value())
    transport.clear()

    first = _exchange(clock, b"/1")
    started: list[Exchange] = []

    def next_two(_: object) -> None:
        for path in (b"/2", b"/3"):
            started.append(_exchange(clock, path))
            proto.submit(started[-1])

    first.deferred.addCallback(next_two)
    before = transport.writes
    proto.submit(first)
    assert transport.writes == before + 1  # not held back: nothing is being read

    (request,) = [
        e
        for e in server.receive_data(transport.value())
        if isinstance(e, h2.events.RequestReceived)
    ]
    transport.clear()
    server.send_headers(request.stream_id, [(b":status", b"200")], end_stream=True)
    before = transport.writes
    proto.dataReceived(server.data_to_send())

    assert len(started) == 2
    assert transport.writes == before + 1
    paths = [
        dict(e.headers)[b":path"]
        for e in server.receive_data(transport.value())
        if isinstance(e, h2.events.RequestReceived)
    ]
    assert paths == [b"/2", b"/3"]
