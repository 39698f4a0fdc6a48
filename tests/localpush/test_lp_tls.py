"""Server TLS context, and one end-to-end session over real TLS on 127.0.0.1."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from gw_device import Device
from lp_helpers import SECRET, hello, wire
from OpenSSL import SSL
from twisted.internet import endpoints
from twisted.internet.ssl import Certificate, optionsForClientTLS

from gateway.devcert import write_self_signed
from gateway.localpush.frames import CallFrame, Party
from gateway.localpush.hub import Hub, InMemoryDeviceDirectory
from gateway.localpush.server import LocalPushFactory, tls_factory
from gateway.localpush.session import SessionSettings
from gateway.localpush.tls import ServerTLS, make_context


def test_context_options(tls_pair: tuple[Path, Path]) -> None:
    """No compression, server cipher order, release-buffers mode are set."""
    ctx = make_context(*tls_pair)
    options = ctx.set_options(0)
    assert options & SSL.OP_NO_COMPRESSION
    assert options & SSL.OP_CIPHER_SERVER_PREFERENCE
    assert ctx.set_mode(0) & SSL.MODE_RELEASE_BUFFERS


def test_reload_swaps_context(tls_pair: tuple[Path, Path], tmp_path: Path) -> None:
    """reload() loads a new pair for future connections."""
    tls = ServerTLS(*tls_pair)
    before = tls.getContext()
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    write_self_signed(cert, key)
    tls.reload(cert, key)
    assert tls.getContext() is not before


def test_reload_failure_keeps_old(tls_pair: tuple[Path, Path], tmp_path: Path) -> None:
    """A bad new pair raises and the old context stays in use."""
    tls = ServerTLS(*tls_pair)
    before = tls.getContext()
    other_cert, other_key = tmp_path / "c.pem", tmp_path / "k.pem"
    write_self_signed(other_cert, other_key)
    with pytest.raises(SSL.Error):
        tls.reload(tls_pair[0], other_key)  # key does not match the cert
    with pytest.raises((SSL.Error, OSError)):
        tls.reload(tmp_path / "missing.pem", other_key)
    assert tls.getContext() is before


def _listen(tls_pair: tuple[Path, Path], **settings: Any) -> tuple[Any, Hub]:
    from twisted.internet import reactor

    hub = Hub(reactor, InMemoryDeviceDirectory())
    factory = LocalPushFactory(
        settings=SessionSettings(**settings), secret=SECRET, hub=hub, clock=reactor
    )
    port = reactor.listenTCP(
        0, tls_factory(factory, ServerTLS(*tls_pair)), interface="127.0.0.1"
    )
    return port, hub


@pytest.mark.integration
@pytest_twisted.inlineCallbacks
def test_end_to_end_over_tls(tls_pair: tuple[Path, Path]) -> Any:
    """hello/welcome, a call acked, ping/pong and bye over a real TLS socket."""
    from twisted.internet import reactor

    cert = tls_pair[0]
    port, hub = _listen(tls_pair)
    try:
        options = optionsForClientTLS(
            "localhost", trustRoot=Certificate.loadPEM(cert.read_bytes())
        )
        endpoint = endpoints.SSL4ClientEndpoint(
            reactor, "127.0.0.1", port.getHost().port, options
        )
        device = yield endpoints.connectProtocol(endpoint, Device())
        device.transport.write(wire(hello(now=time.time())))
        welcome = yield device.next_frame()
        assert welcome["type"] == "welcome"
        assert hub.is_online("3f1c-iphone")

        call = CallFrame(
            call_id="c1",
            caller=Party(handle="+4930123"),
            video=False,
            to="sip:bob@example.com",
            expires_at=time.time() + 60,
        )
        delivered = hub.deliver("3f1c-iphone", call)
        frame = yield device.next_frame()
        assert frame["type"] == "call"
        device.transport.write(wire({"type": "ack", "id": frame["id"]}))
        result = yield delivered
        assert result.delivered

        device.transport.write(wire({"type": "ping", "id": "p1"}))
        pong = yield device.next_frame()
        assert pong == {"type": "pong", "id": "p1"}

        device.transport.write(wire({"type": "bye"}))
        yield device.lost.addTimeout(5, reactor)
        assert not hub.is_online("3f1c-iphone")
    finally:
        yield port.stopListening()


@pytest.mark.integration
@pytest_twisted.inlineCallbacks
def test_tls_1_1_refused(tls_pair: tuple[Path, Path]) -> Any:
    """A client limited to TLS 1.1 cannot complete a handshake."""
    from twisted.internet import reactor
    from twisted.internet.ssl import CertificateOptions, TLSVersion

    port, hub = _listen(tls_pair)
    try:
        options = CertificateOptions(
            insecurelyLowerMinimumTo=TLSVersion.TLSv1_0,
            lowerMaximumSecurityTo=TLSVersion.TLSv1_1,
            verify=False,
        )
        endpoint = endpoints.SSL4ClientEndpoint(
            reactor, "127.0.0.1", port.getHost().port, options
        )
        device = yield endpoints.connectProtocol(endpoint, Device())
        device.transport.write(wire(hello(now=time.time())))
        yield device.lost.addTimeout(5, reactor)
        assert device.frames == []
        assert hub.online_count == 0
    finally:
        yield port.stopListening()


@pytest.mark.integration
@pytest_twisted.inlineCallbacks
def test_stalled_tls_handshake_closed(tls_pair: tuple[Path, Path]) -> Any:
    """A TCP client that never starts TLS is closed at the handshake timeout,
    with no bytes sent to it."""
    from twisted.internet import reactor

    port, _ = _listen(tls_pair, handshake_timeout_s=0.2)
    try:
        endpoint = endpoints.TCP4ClientEndpoint(
            reactor, "127.0.0.1", port.getHost().port
        )
        device = yield endpoints.connectProtocol(endpoint, Device())
        yield device.lost.addTimeout(5, reactor)
        assert device.decoder.buffered == 0 and device.frames == []
    finally:
        yield port.stopListening()


@pytest.mark.integration
@pytest_twisted.inlineCallbacks
def test_tls_up_without_hello_gets_error(tls_pair: tuple[Path, Path]) -> Any:
    """TLS completed but no hello: error handshake_timeout, then close."""
    from twisted.internet import reactor

    port, _ = _listen(tls_pair, handshake_timeout_s=0.3)
    try:
        options = optionsForClientTLS(
            "localhost", trustRoot=Certificate.loadPEM(tls_pair[0].read_bytes())
        )
        endpoint = endpoints.SSL4ClientEndpoint(
            reactor, "127.0.0.1", port.getHost().port, options
        )
        device = yield endpoints.connectProtocol(endpoint, Device())
        frame = yield device.next_frame()
        assert (frame["type"], frame["code"]) == ("error", "handshake_timeout")
        yield device.lost.addTimeout(5, reactor)
    finally:
        yield port.stopListening()
