"""In-test HTTP/2 servers over TLS on 127.0.0.1: Twisted's Site and a scriptable fake.

The fake drives ``H2Connection(client_side=False)`` directly so tests can make
the server misbehave (GOAWAY, RST_STREAM, garbage, silence, early close).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from OpenSSL import SSL
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import CertificateOptions, PrivateCertificate
from twisted.web import resource, server


def tls_options(
    cert: Path, key: Path, protocols: list[bytes] | None = None
) -> CertificateOptions:
    """Server TLS options for the test certificate, offering ``protocols`` by ALPN."""
    pc = PrivateCertificate.loadPEM(cert.read_bytes() + key.read_bytes())
    return CertificateOptions(
        privateKey=pc.privateKey.original,
        certificate=pc.original,
        acceptableProtocols=[b"h2"] if protocols is None else protocols,
    )


class NoAlpnContextFactory:
    """Old-style context factory: a TLS server that ignores ALPN altogether."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert, self.key = cert, key

    def getContext(self) -> SSL.Context:
        ctx = SSL.Context(SSL.TLS_METHOD)
        ctx.use_certificate_file(str(self.cert))
        ctx.use_privatekey_file(str(self.key))
        return ctx


class Echo(resource.Resource):
    """Answers any request with JSON describing it, after ``delay`` seconds."""

    isLeaf = True

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.delay = delay
        self.active = 0
        self.max_active = 0
        self.count = 0

    def render(self, request: server.Request) -> Any:
        self.count += 1
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        body = request.content.read()
        headers = {
            k.decode().lower(): [v.decode() for v in vs]
            for k, vs in request.requestHeaders.getAllRawHeaders()
        }
        answer = json.dumps(
            {
                "method": request.method.decode(),
                "path": request.uri.decode(),
                "headers": headers,
                "body": body.decode(),
                "proto": request.clientproto.decode(),
            }
        ).encode()
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"apns-id", b"abc-123")

        def finish() -> None:
            self.active -= 1
            request.write(answer)
            request.finish()

        if self.delay:
            reactor.callLater(self.delay, finish)
            return server.NOT_DONE_YET
        self.active -= 1
        return answer


class CountingSite(server.Site):
    """Site that counts accepted connections."""

    def __init__(self, res: resource.Resource) -> None:
        super().__init__(res)
        self.connections = 0

    def buildProtocol(self, addr: Any) -> Any:
        self.connections += 1
        return super().buildProtocol(addr)


Handler = Callable[["FakeH2Server", int, list[tuple[bytes, bytes]], bytes], None]


def respond(
    srv: FakeH2Server, stream_id: int, body: bytes = b'{"ok":true}', status: int = 200
) -> None:
    """Send a complete small response on ``stream_id``."""
    srv.conn.send_headers(
        stream_id,
        [
            (b":status", str(status).encode()),
            (b"content-length", str(len(body)).encode()),
        ],
    )
    srv.conn.send_data(stream_id, body, end_stream=True)
    srv.flush()


class FakeH2Server(Protocol):
    """Scriptable HTTP/2 server: ``factory.on_request`` decides what happens."""

    factory: FakeFactory

    def connectionMade(self) -> None:
        self.factory.connections.append(self)
        self.conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self.bodies: dict[int, bytes] = {}
        self.headers: dict[int, list[tuple[bytes, bytes]]] = {}
        if self.factory.on_connect is not None:
            self.factory.on_connect(self)
            return
        if self.factory.max_concurrent_streams is not None:
            self.conn.local_settings = h2.settings.Settings(
                client=False,
                initial_values={
                    h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.factory.max_concurrent_streams
                },
            )
        self.conn.initiate_connection()
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    def dataReceived(self, data: bytes) -> None:
        if self.factory.on_connect is not None:
            return
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            # After our own GOAWAY h2 rejects everything; the test decides.
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self.headers[event.stream_id] = list(event.headers or [])
                self.bodies[event.stream_id] = b""
            elif isinstance(event, h2.events.DataReceived):
                self.bodies[event.stream_id] += event.data or b""
                self.conn.acknowledge_received_data(
                    event.flow_controlled_length or 0, event.stream_id
                )
            elif isinstance(event, h2.events.StreamEnded):
                self.factory.requests += 1
                self.factory.on_request(
                    self,
                    event.stream_id,
                    self.headers[event.stream_id],
                    self.bodies[event.stream_id],
                )
            elif isinstance(event, h2.events.StreamReset):
                self.factory.resets.append(
                    (event.stream_id, int(event.error_code or 0))
                )
        self.flush()

    def connectionLost(self, reason: Any = None) -> None:
        self.factory.lost += 1
        for d in self.factory.lost_waiters:
            if not d.called:
                d.callback(None)


class FakeFactory(Factory):
    """Holds the script and what the fake server saw."""

    protocol = FakeH2Server

    def __init__(
        self,
        on_request: Handler,
        max_concurrent_streams: int | None = 100,
        on_connect: Callable[[FakeH2Server], None] | None = None,
    ) -> None:
        self.on_request = on_request
        self.on_connect = on_connect
        self.max_concurrent_streams = max_concurrent_streams
        self.connections: list[FakeH2Server] = []
        self.resets: list[tuple[int, int]] = []
        self.requests = 0
        self.lost = 0
        self.lost_waiters: list[Deferred[None]] = []


class ConnectProxy(Protocol):
    """Minimal HTTP CONNECT proxy: answers 200 and pipes bytes both ways."""

    factory: ProxyFactory

    def connectionMade(self) -> None:
        self.buf = b""
        self.peer: Pipe | None = None

    def dataReceived(self, data: bytes) -> None:
        if self.peer is not None:
            assert self.peer.transport is not None
            self.peer.transport.write(data)
            return
        self.buf += data
        if b"\r\n\r\n" not in self.buf:
            return
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        line = head.split(b"\r\n")[0]
        self.factory.seen.append(line)
        assert self.transport is not None
        if self.factory.refuse:
            self.transport.write(b"HTTP/1.1 403 Forbidden\r\n\r\n")
            self.transport.loseConnection()
            return
        target = line.split(b" ")[1]
        host, port = target.rsplit(b":", 1)
        self.transport.pauseProducing()  # type: ignore[attr-defined]
        endpoint = TCP4ClientEndpoint(reactor, host.decode(), int(port))
        connectProtocol(endpoint, Pipe(self)).addCallback(self._up, rest)

    def _up(self, pipe: Pipe, rest: bytes) -> None:
        self.peer = pipe
        assert self.transport is not None and pipe.transport is not None
        self.transport.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        if rest:
            pipe.transport.write(rest)
        self.transport.resumeProducing()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Any = None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.loseConnection()


class Pipe(Protocol):
    """The proxy's leg to the target server."""

    def __init__(self, other: ConnectProxy) -> None:
        self.other = other

    def dataReceived(self, data: bytes) -> None:
        assert self.other.transport is not None
        self.other.transport.write(data)

    def connectionLost(self, reason: Any = None) -> None:
        assert self.other.transport is not None
        self.other.transport.loseConnection()


class ProxyFactory(Factory):
    """Records CONNECT lines; ``refuse`` answers 403."""

    protocol = ConnectProxy

    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.seen: list[bytes] = []


# The sans-IO side: h2's own server state machine, for the client core tests.
GET = [
    (b":method", b"GET"),
    (b":scheme", b"https"),
    (b":authority", b"api.example.com"),
    (b":path", b"/"),
]


def make_server(max_streams: int | None = None) -> h2.connection.H2Connection:
    server = h2.connection.H2Connection(
        config=h2.config.H2Configuration(client_side=False, header_encoding=None)
    )
    if max_streams is not None:
        server.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_streams
            },
        )
    server.initiate_connection()
    return server
