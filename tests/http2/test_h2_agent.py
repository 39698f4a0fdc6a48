"""H2Agent against real HTTP/2 TLS servers on 127.0.0.1 (Twisted Site and a fake)."""

from __future__ import annotations

import gc
import json
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from h2.connection import ConnectionState
from h2.errors import ErrorCodes
from h2_fake_servers import (
    CountingSite,
    Echo,
    FakeFactory,
    FakeH2Server,
    NoAlpnContextFactory,
    ProxyFactory,
    respond,
    tls_options,
)
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, gatherResults
from twisted.internet.ssl import CertificateOptions, PrivateCertificate
from twisted.internet.task import deferLater
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from gateway.http2 import (
    AgentClosedError,
    BytesProducer,
    ConnectFailedError,
    ConnectionLostError,
    GoAwayError,
    H2Agent,
    NegotiationError,
    ProxyConnectError,
    QueueFullError,
    RemoteProtocolError,
    RequestTimeoutError,
    ResponseTooLargeError,
    StreamResetError,
)

pytestmark = pytest.mark.integration


def listen(
    factory: Any, tls_pair: tuple[Path, Path], protocols: list[bytes] | None = None
) -> Any:
    cert, key = tls_pair
    return reactor.listenSSL(
        0, factory, tls_options(cert, key, protocols), interface="127.0.0.1"
    )


@pytest.fixture(autouse=True)
def no_logged_errors() -> Generator[None, None, None]:
    """Fail the test if anything logged an error (unhandled Deferred failures included)."""
    errors: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("isError") or event.get("log_level") in (
            LogLevel.error,
            LogLevel.critical,
        ):
            errors.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        yield
        gc.collect()  # unhandled Deferred errors are logged on collection
    finally:
        globalLogPublisher.removeObserver(observe)
    assert [formatEvent(e) for e in errors] == []


def make_agent(tls_pair: tuple[Path, Path], **kw: Any) -> H2Agent:
    kw.setdefault("ping_interval", None)
    return H2Agent(reactor, ca_file=tls_pair[0], **kw)


@pytest_twisted.inlineCallbacks
def test_post_json_with_headers(
    tls_pair: tuple[Path, Path],
) -> Generator[Deferred[Any], Any, None]:
    """treq.HTTPClient(H2Agent) POSTs JSON with headers and gets 200, headers and body over h2."""
    echo = Echo()
    site = CountingSite(echo)
    port = listen(site, tls_pair)
    agent = make_agent(tls_pair)
    try:
        client = HTTPClient(agent)
        url = f"https://127.0.0.1:{port.getHost().port}/3/device/abc"
        resp = yield client.post(
            url,
            json={"aps": {}},
            headers={"apns-push-type": "voip", "Apns-Topic": "a.b.voip"},
        )
        assert resp.code == 200
        assert resp.headers.getRawHeaders(b"apns-id") == [b"abc-123"]
        assert (resp.phrase, resp.version) == (b"OK", (b"HTTP", 2, 0))
        raw = yield treq.content(resp)
        assert resp.length == len(raw)
        body = yield treq.json_content(resp)
        assert body["proto"] == "HTTP/2"
        assert body["method"] == "POST"
        assert body["path"] == "/3/device/abc"
        assert json.loads(body["body"]) == {"aps": {}}
        assert body["headers"]["apns-push-type"] == ["voip"]
        assert body["headers"]["apns-topic"] == ["a.b.voip"]
        assert body["headers"]["content-length"] == [str(len(body["body"]))]
        # IResponse.request: what was asked, header fields as sent.
        request = resp.original.request
        assert request.method == b"POST"
        assert request.absoluteURI == url.encode()
        assert request.headers.getRawHeaders(b"apns-topic") == [b"a.b.voip"]
        assert request.headers.getRawHeaders(b"apns-push-type") == [b"voip"]
        assert all(
            not n.startswith(b":") for n, _ in request.headers.getAllRawHeaders()
        )
    finally:
        yield agent.close()
        yield port.stopListening()


def base_url(port: Any) -> str:
    return f"https://127.0.0.1:{port.getHost().port}"


@pytest_twisted.inlineCallbacks
def wait_until(
    predicate: Any, timeout: float = 5.0
) -> Generator[Deferred[Any], Any, None]:
    """Poll ``predicate`` on the reactor until true (fails the test after ``timeout``)."""
    waited = 0.0
    while not predicate():
        assert waited < timeout, "condition not reached"
        yield deferLater(reactor, 0.01, lambda: None)
        waited += 0.01


def never(srv: FakeH2Server, stream_id: int, headers: Any, body: bytes) -> None:
    """Handler that never answers."""


@pytest_twisted.inlineCallbacks
def test_hundred_concurrent_requests_share_one_connection(
    tls_pair: tuple[Path, Path],
) -> Generator[Deferred[Any], Any, None]:
    """100 concurrent requests run as streams of ONE TCP connection, overlapping."""
    echo = Echo(delay=0.05)
    site = CountingSite(echo)
    port = listen(site, tls_pair)
    agent = make_agent(tls_pair)
    try:
        client = HTTPClient(agent)
        url = base_url(port) + "/x"
        ds = [client.post(url, json={"n": i}) for i in range(100)]
        responses = yield gatherResults(ds)
        bodies = yield gatherResults([treq.json_content(r) for r in responses])
        assert [r.code for r in responses] == [200] * 100
        assert sorted(json.loads(b["body"])["n"] for b in bodies) == list(range(100))
        assert site.connections == 1
        assert agent.connection_count("127.0.0.1", port.getHost().port) == 1
        assert echo.max_active > 10  # really concurrent, not one after another
    finally:
        yield agent.close()
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_max_concurrent_streams_one_serialises(
    tls_pair: tuple[Path, Path],
) -> Generator[Deferred[Any], Any, None]:
    """With SETTINGS_MAX_CONCURRENT_STREAMS=1 requests queue and run one at a time."""
    state = {"open": 0, "max": 0}

    def slow(srv: FakeH2Server, stream_id: int, headers: Any, body: bytes) -> None:
        state["open"] += 1
        state["max"] = max(state["max"], state["open"])

        def answer() -> None:
            state["open"] -= 1
            respond(srv, stream_id)

        reactor.callLater(0.01, answer)

    factory = FakeFactory(slow, max_concurrent_streams=1)
    port = listen(factory, tls_pair)
    agent = make_agent(tls_pair)
    try:
        client = HTTPClient(agent)
        ds = [client.get(base_url(port) + f"/{i}") for i in range(5)]
        responses = yield gatherResults(ds)
        assert [r.code for r in responses] == [200] * 5
        assert state["max"] == 1
        assert factory.requests == 5
        assert len(factory.connections) == 1
    finally:
        yield agent.close()
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_goaway_retries_streams_above_last_stream_id(
    tls_pair: tuple[Path, Path],
) -> Generator[Deferred[Any], Any, None]:
    """GOAWAY(last=3) lets streams 1 and 3 finish; stream 5 is retried on a new connection."""
    first: list[int] = []

    def handler(srv: FakeH2Server, stream_id: int, headers: Any, body: bytes) -> None:
        conn_no = srv.factory.connections.index(srv)
        if conn_no > 0:
            respond(srv, stream_id, b"second")
            return
        first.append(stream_id)
        if len(first) == 3:
            srv.conn.close_connection(last_stream_id=3)
            srv.flush()
            # h2 refuses to send after its own GOAWAY; RFC 9113 allows it.
            srv.conn.state_machine.state = ConnectionState.SERVER_OPEN
            for s in (1, 3):
                respond(srv, s, b"first")

    factory = FakeFactory(handler)
    port = listen(factory, tls_pair)
    agent = make_agent(tls_pair)
    try:
        client = HTTPClient(agent)
        ds = [client.get(base_url(port) + f"/{i}") for i in range(3)]
        responses = yield gatherResults(ds)
        bodies = yield gatherResults([treq.content(r) for r in responses])
        assert sorted(first) == [1, 3, 5]
        assert sorted(bodies) == [b"first", b"first", b"second"]
        assert len(factory.connections) == 2
    finally:
        yield agent.close()
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_goaway_storm_fails_clearly(
    tls_pair: tuple[Path, Path],
) -> Generator[Deferred[Any], Any, None]:
    """A server that answers every request with GOAWAY(last=0) ends in GoAwayError after max_attempts."""

    def storm(srv: FakeH2Server, stream_id: int, headers: Any, body: bytes) -> None:
        srv.conn.close_connection(
            error_code=ErrorCodes.ENHANCE_YOUR_CALM, last_stream_id=0
        )
        srv.flush()

    factory = FakeFactory(storm)
    port = listen(factory, tls_pair)
    agent = make_agent(tls_pair, max_attempts=3, backoff=lambda n: 0.01)
    try:
        with pytest.raises(GoAwayError, match="ENHANCE_YOUR_CALM"):
            yield agent.request(b"GET", (base_url(port) + "/").encode())
        assert len(factory.connections) == 3
    finally:
        yield agent.close()
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_rst_stream_fails_only_that_request(
    tls_pair: tuple[Path, Path],
) -> Generator[Deferred[Any], Any, None]:
    """RST_STREAM on one stream fails that request with StreamResetError; the others succeed."""

    def handler(srv: FakeH2Server, stream_id: int, headers: Any, body: bytes) -> None:
        if (b":path", b"/reset") in headers:
            srv.conn.reset_stream(stream_id, ErrorCodes.INTERNAL_ERROR)
            srv.flush()
        else:
            respond(srv, stream_id)

    factory = FakeFactory(handler)
    port = listen(factory, tls_pair)
    agent = make_agent(tls_pair)
    try:
        client = HTTPClient(agent)
        ok1 = client.get(base_url(port) + "/a")
        bad = client.get(base_url(port) + "/reset")
        ok2 = client.get(base_url(port) + "/b")
        with pytest.raises(StreamResetError, match="INTERNAL_ERROR"):
            yield bad
        r1 = yield ok1
        r2 = yield ok2
        assert (r1.code, r2.code) == (200, 200)
        assert len(factory.connections) == 1
    finally:
        yield agent.close()
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_cancel_resets_stream(
    tls_pair: tuple[Path, Path],
) -> Generator[Deferred[Any], Any, None]:
    """Cancelling the request's Deferred sends RST_STREAM(CANCEL) and errbacks CancelledError."""
    factory = FakeFactory(never)
    port = listen(factory, tls_pair)
    agent = make_agent(tls_pair)
    try:
        d = agent.request(b"GET", (base_url(port) + "/hang").encode())
        yield wait_until(lambda: factory.requests == 1)
        d.cancel()
        with pytest.raises(CancelledError):
            yield d
        yield wait_until(lambda: factory.resets)
        assert factory.resets == [(1, ErrorCodes.CANCEL)]
    finally:
        yield agent.close()
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_request_timeout(
    tls_pair: tuple[Path, Path],
) -> Generator[Deferred[Any], Any, None]:
    """A server that never answers: RequestTimeoutError after request_timeout, stream reset."""
    factory = FakeFactory(never)
    port = listen(factory, tls_pair)
    agent = make_agent(tls_pair, request_timeout=0.2)
    try:
        with pytest.raises(RequestTimeoutError):
            yield agent.request(b"GET", (base_url(port) + "/hang").encode())
        yield wait_until(lambda: factory.resets)
        assert factory.resets == [(1, ErrorCodes.CANCEL)]
    finally:
        yield agent.close()
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_treq_timeout_cancels(
    tls_pair: tuple[Path, Path],
) -> Generator[Deferred[Any], Any, None]:
    """treq's own ``timeout=`` cancels our Deferred, which resets the stream."""
    factory = FakeFactory(never)
    port = listen(factory, tls_pair)
    agent = make_agent(tls_pair, request_timeout=None)
    try:
        with pytest.raises(Exception) as info:
            yield HTTPClient(agent).get(base_url(port) + "/hang", timeout=0.2)
        assert info.type.__name__ in {"ResponseNeverReceived", "CancelledError"}
        yield wait_until(lambda: factory.resets)
    finally:
        yield agent.close()
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_proxy_connect(
    tls_pair: tuple[Path, Path],
) -> Generator[Deferred[Any], Any, None]:
    """With ``proxy=(host, port)`` the agent tunnels through HTTP CONNECT, then speaks h2 over TLS."""
    site = CountingSite(Echo())
    port = listen(site, tls_pair)
    proxy = ProxyFactory()
    proxy_port = reactor.listenTCP(0, proxy, interface="127.0.0.1")
    agent = make_agent(tls_pair, proxy=("127.0.0.1", proxy_port.getHost().port))
    try:
        resp = yield HTTPClient(agent).get(base_url(port) + "/via-proxy")
        body = yield treq.json_content(resp)
        assert resp.code == 200
        assert body["proto"] == "HTTP/2"
        assert proxy.seen == [b"CONNECT 127.0.0.1:%d HTTP/1.1" % port.getHost().port]
    finally:
        yield agent.close()
        yield port.stopListening()
        yield proxy_port.stopListening()


@pytest_twisted.inlineCallbacks
def test_proxy_refuses(
    tls_pair: tuple[Path, Path],
) -> Generator[Deferred[Any], Any, None]:
    """A proxy answering 403 to CONNECT fails the request with ProxyConnectError."""
    proxy = ProxyFactory(refuse=True)
    proxy_port = reactor.listenTCP(0, proxy, interface="127.0.0.1")
    agent = make_agent(tls_pair, proxy=("127.0.0.1", proxy_port.getHost().port))
    try:
        with pytest.raises(ProxyConnectError, match="403"):
            yield agent.request(b"GET", b"https://127.0.0.1:1/")
    finally:
        yield agent.close()
        yield proxy_port.stopListening()


@pytest_twisted.inlineCallbacks
def test_garbage_server(
    tls_pair: tuple[Path, Path],
) -> Generator[Deferred[Any], Any, None]:
    """A server sending non-HTTP/2 bytes after TLS fails the request with RemoteProtocolError."""

    def garbage(srv: FakeH2Server) -> None:
        assert srv.transport is not None
        srv.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi" * 10)

    factory = FakeFactory(never, on_connect=garbage)
    port = listen(factory, tls_pair)
    agent = make_agent(tls_pair)
    try:
        with pytest.raises(RemoteProtocolError):
            yield agent.request(b"GET", (base_url(port) + "/").encode())
    finally:
        yield agent.close()
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_close_mid_stream(
    tls_pair: tuple[Path, Path],
) -> Generator[Deferred[Any], Any, None]:
    """A server closing the socket mid-body fails the body with ConnectionLostError."""

    def half(srv: FakeH2Server, stream_id: int, headers: Any, body: bytes) -> None:
        srv.conn.send_headers(stream_id, [(b":status", b"200")])
        srv.conn.send_data(stream_id, b"partial")
        srv.flush()
        assert srv.transport is not None
        reactor.callLater(0.05, srv.transport.loseConnection)

    factory = FakeFactory(half)
    port = listen(factory, tls_pair)
    agent = make_agent(tls_pair)
    try:
        resp = yield agent.request(b"GET", (base_url(port) + "/").encode())
        assert resp.code == 200
        with pytest.raises(ConnectionLostError):
            yield treq.content(resp)
    finally:
        yield agent.close()
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_huge_body_capped(
    tls_pair: tuple[Path, Path],
) -> Generator[Deferred[Any], Any, None]:
    """A body over max_response_size fails with ResponseTooLargeError and resets the stream."""

    def huge(srv: FakeH2Server, stream_id: int, headers: Any, body: bytes) -> None:
        srv.conn.send_headers(stream_id, [(b":status", b"200")])
        srv.conn.send_data(stream_id, b"x" * 16000, end_stream=True)
        srv.flush()

    factory = FakeFactory(huge)
    port = listen(factory, tls_pair)
    agent = make_agent(tls_pair, max_response_size=4096)
    try:
        resp = yield agent.request(b"GET", (base_url(port) + "/").encode())
        with pytest.raises(ResponseTooLargeError):
            yield treq.content(resp)
        # The connection is still good for the next request.
        factory.on_request = lambda srv, s, h, b: respond(srv, s)
        resp2 = yield agent.request(b"GET", (base_url(port) + "/").encode())
        assert resp2.code == 200
        assert len(factory.connections) == 1
    finally:
        yield agent.close()
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_alpn_without_h2_fails(
    tls_pair: tuple[Path, Path],
) -> Generator[Deferred[Any], Any, None]:
    """A TLS server without ALPN h2 fails the request with NegotiationError."""
    port = reactor.listenSSL(
        0, FakeFactory(never), NoAlpnContextFactory(*tls_pair), interface="127.0.0.1"
    )
    agent = make_agent(tls_pair)
    try:
        with pytest.raises(NegotiationError):
            yield agent.request(b"GET", (base_url(port) + "/").encode())
    finally:
        yield agent.close()
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_untrusted_certificate_fails(
    tls_pair: tuple[Path, Path],
) -> Generator[Deferred[Any], Any, None]:
    """Without the test CA the self-signed server certificate is rejected: ConnectFailedError."""
    site = CountingSite(Echo())
    port = listen(site, tls_pair)
    agent = H2Agent(reactor, ping_interval=None)
    try:
        with pytest.raises(ConnectFailedError):
            yield agent.request(b"GET", (base_url(port) + "/").encode())
        assert site.connections == 1
    finally:
        yield agent.close()
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_connection_refused(
    tls_pair: tuple[Path, Path],
) -> Generator[Deferred[Any], Any, None]:
    """Nothing listening: ConnectFailedError, not a hang."""
    port = reactor.listenTCP(0, FakeFactory(never), interface="127.0.0.1")
    number = port.getHost().port
    yield port.stopListening()
    agent = make_agent(tls_pair)
    try:
        with pytest.raises(ConnectFailedError):
            yield agent.request(b"GET", b"https://127.0.0.1:%d/" % number)
    finally:
        yield agent.close()


@pytest_twisted.inlineCallbacks
def test_queue_bound_fails_fast(
    tls_pair: tuple[Path, Path],
) -> Generator[Deferred[Any], Any, None]:
    """Past max_queued waiting requests, ``request`` fails at once with QueueFullError."""
    factory = FakeFactory(never)
    port = listen(factory, tls_pair)
    agent = make_agent(tls_pair, max_queued=2)
    url = (base_url(port) + "/").encode()
    try:
        waiting = [agent.request(b"GET", url) for _ in range(2)]
        extra = agent.request(b"GET", url)
        assert extra.called
        with pytest.raises(QueueFullError):
            yield extra
        for d in waiting:
            d.addErrback(lambda f: f.trap(CancelledError))
            d.cancel()
    finally:
        yield agent.close()
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_close_fails_in_flight(
    tls_pair: tuple[Path, Path],
) -> Generator[Deferred[Any], Any, None]:
    """close() fails in-flight requests with ConnectionLostError and later ones with AgentClosedError."""
    factory = FakeFactory(never)
    port = listen(factory, tls_pair)
    agent = make_agent(tls_pair)
    url = (base_url(port) + "/").encode()
    try:
        d = agent.request(b"GET", url)
        yield wait_until(lambda: factory.requests == 1)
        yield agent.close()
        with pytest.raises(ConnectionLostError):
            yield d
        with pytest.raises(AgentClosedError):
            yield agent.request(b"GET", url)
        yield wait_until(lambda: factory.lost == 1)
    finally:
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_large_request_body_flow_control(
    tls_pair: tuple[Path, Path],
) -> Generator[Deferred[Any], Any, None]:
    """A request body larger than the initial 64 KiB window is sent whole as WINDOW_UPDATEs arrive."""
    echo = Echo()
    port = listen(CountingSite(echo), tls_pair)
    agent = make_agent(tls_pair)
    try:
        payload = b"y" * 300_000
        resp = yield HTTPClient(agent).post(base_url(port) + "/big", data=payload)
        body = yield treq.json_content(resp)
        assert len(body["body"]) == len(payload)
    finally:
        yield agent.close()
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_treq_with_bytes_producer(
    tls_pair: tuple[Path, Path],
) -> Generator[Deferred[Any], Any, None]:
    """HTTPClient(agent, data_to_body_producer=BytesProducer) sends json= bodies without the cooperator."""
    port = listen(CountingSite(Echo()), tls_pair)
    agent = make_agent(tls_pair)
    try:
        client = HTTPClient(agent, data_to_body_producer=BytesProducer)
        resp = yield client.post(base_url(port) + "/p", json={"callUUID": "u1"})
        body = yield treq.json_content(resp)
        assert json.loads(body["body"]) == {"callUUID": "u1"}
        assert body["headers"]["content-type"] == ["application/json; charset=UTF-8"]
    finally:
        yield agent.close()
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_refused_stream_is_retried(
    tls_pair: tuple[Path, Path],
) -> Generator[Deferred[Any], Any, None]:
    """RST_STREAM(REFUSED_STREAM) means "not processed": the agent retries and the caller sees 200."""
    seen: list[int] = []

    def handler(srv: FakeH2Server, stream_id: int, headers: Any, body: bytes) -> None:
        seen.append(stream_id)
        if len(seen) == 1:
            srv.conn.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            srv.flush()
        else:
            respond(srv, stream_id)

    factory = FakeFactory(handler)
    port = listen(factory, tls_pair)
    agent = make_agent(tls_pair)
    try:
        resp = yield agent.request(b"GET", (base_url(port) + "/").encode())
        assert resp.code == 200
        assert seen == [1, 3]
    finally:
        yield agent.close()
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_client_certificate(
    tls_pair: tuple[Path, Path],
) -> Generator[Deferred[Any], Any, None]:
    """A server requiring a client certificate (APNs certificate auth) accepts the agent's one."""
    cert, key = tls_pair
    pc = PrivateCertificate.loadPEM(cert.read_bytes() + key.read_bytes())
    options = CertificateOptions(
        privateKey=pc.privateKey.original,
        certificate=pc.original,
        verify=True,
        caCerts=[pc.original],
        requireCertificate=True,
        acceptableProtocols=[b"h2"],
    )
    port = reactor.listenSSL(0, CountingSite(Echo()), options, interface="127.0.0.1")
    with_cert = make_agent(tls_pair, client_certificate=pc)
    without = make_agent(tls_pair)
    try:
        resp = yield with_cert.request(b"GET", (base_url(port) + "/").encode())
        assert resp.code == 200
        with pytest.raises((ConnectFailedError, ConnectionLostError)):
            yield without.request(b"GET", (base_url(port) + "/").encode())
    finally:
        yield with_cert.close()
        yield without.close()
        yield port.stopListening()
