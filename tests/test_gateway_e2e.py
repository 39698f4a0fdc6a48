"""The assembled gateway over real sockets: a device connects, a call rings it."""

from __future__ import annotations

import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import attrs
import pytest
import pytest_twisted
from gw_device import Device
from gw_example import EPHEMERAL, example_in
from twisted.internet import endpoints, reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.logger import formatEvent, globalLogPublisher

from gateway.app import Gateway, build_service
from gateway.calls.dispatcher import ActiveCall, CallRequest
from gateway.calls.machine import Final
from gateway.config import load_config
from gateway.devfiles import read_jwt_secret
from gateway.devicetoken import mint_device_token
from gateway.localpush.codec import encode_frame


@attrs.define
class Listener:
    events: list[tuple[str, object]] = attrs.field(factory=list)
    ended: Deferred[None] = attrs.field(factory=Deferred)

    def call_ringing(self, call: ActiveCall) -> None:
        self.events.append(("ringing", call.push_status))

    def call_ended(self, call: ActiveCall) -> None:
        self.events.append(("ended", call.final))
        self.ended.callback(None)


def _start(config_path: Path) -> Gateway:
    """Build and start the gateway of this config, ports ephemeral."""
    config = load_config(config_path, environ=EPHEMERAL)
    service = build_service(config, reactor)  # type: ignore[arg-type]
    service.startService()
    return service


@pytest.fixture
def gateway(tmp_path: Path) -> Generator[Gateway, None, None]:
    service = _start(example_in(tmp_path))
    yield service
    pytest_twisted.blockon(service.stopService())


def _frame(obj: dict[str, Any]) -> bytes:
    return encode_frame(obj, 16384)


@pytest.fixture
def log_events() -> Generator[list[dict[str, Any]], None, None]:
    """Every log event emitted while the test runs."""
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


@pytest.mark.integration
@pytest_twisted.inlineCallbacks
def test_device_hello_then_call_rings_over_local_push(
    gateway: Gateway, log_events: list[dict[str, Any]]
) -> Any:
    """hello updates the registry; a call to its AOR arrives, is acked, rings;
    neither the device JWT nor its push token shows up in any log event."""
    config = gateway.config
    listener = gateway.listeners["localpush"]
    assert listener.address is not None
    host, port = listener.address
    assert config.localpush.cert is not None
    assert config.localpush.jwt_secret_file is not None
    options = optionsForClientTLS(
        "localhost",
        trustRoot=Certificate.loadPEM(config.localpush.cert.read_bytes()),
    )
    endpoint = endpoints.SSL4ClientEndpoint(reactor, host, port, options)
    device = yield endpoints.connectProtocol(endpoint, Device())
    secret = read_jwt_secret(config.localpush.jwt_secret_file)
    token = mint_device_token(
        secret, "iphone-1", "sip:bob@example.com", now=time.time()
    )
    device.transport.write(
        _frame(
            {
                "type": "hello",
                "v": 1,
                "device_id": "iphone-1",
                "token": token,
                "voip_token": "ab" * 32,
                "topic": "com.example.voip",
                "apns_env": "sandbox",
            }
        )
    )
    welcome = yield device.next_frame()
    assert welcome["type"] == "welcome"
    assert gateway.registry is not None
    stored = gateway.registry.get_device("iphone-1")
    assert stored is not None
    assert (stored.aors, stored.voip_token, stored.apns_env) == (
        ("sip:bob@example.com",),
        "ab" * 32,
        "sandbox",
    )

    calls = Listener()
    assert gateway.dispatcher is not None
    call = gateway.dispatcher.start(
        CallRequest(aor="sip:bob@example.com", caller_handle="+4930123"), calls
    )
    assert call is not None
    frame = yield device.next_frame()
    assert (frame["type"], frame["call_id"]) == ("call", call.call_id)
    device.transport.write(_frame({"type": "ack", "id": frame["id"]}))
    device.transport.write(
        _frame({"type": "call_event", "call_id": call.call_id, "event": "declined"})
    )
    yield calls.ended.addTimeout(5, reactor)
    assert calls.events == [("ringing", "local;acked"), ("ended", Final(603))]
    device.transport.write(_frame({"type": "bye"}))
    yield device.lost
    logged = "\n".join(f"{formatEvent(e)} {e!r}" for e in log_events)
    assert "iphone-1" in logged  # the session was logged at all
    assert token not in logged
    assert "ab" * 32 not in logged


def _connect_device(gateway: Gateway, device_id: str) -> Any:
    """Open a TLS session and send hello; fires with the device client."""
    config = gateway.config
    assert config.localpush.cert is not None
    assert config.localpush.jwt_secret_file is not None
    address = gateway.listeners["localpush"].address
    assert address is not None
    options = optionsForClientTLS(
        "localhost", trustRoot=Certificate.loadPEM(config.localpush.cert.read_bytes())
    )
    endpoint = endpoints.SSL4ClientEndpoint(reactor, *address, options)
    secret = read_jwt_secret(config.localpush.jwt_secret_file)
    token = mint_device_token(secret, device_id, "sip:bob@example.com", now=time.time())

    def hello(device: Device) -> Device:
        device.transport.write(
            _frame({"type": "hello", "v": 1, "device_id": device_id, "token": token})
        )
        return device

    return endpoints.connectProtocol(endpoint, Device()).addCallback(hello)


@pytest.mark.integration
@pytest_twisted.inlineCallbacks
def test_messages_survive_a_gateway_restart(tmp_path: Path) -> Any:
    """A message for an offline device is stored, survives a restart of the
    gateway, and is delivered oldest first when the device connects."""
    from gateway.messages import MessageRequest
    from gateway.store import Device as StoredDevice

    config_path = example_in(tmp_path)
    first = _start(config_path)
    try:
        assert first.registry is not None and first.messenger is not None
        yield first.registry.put_device(
            StoredDevice("iphone-1", aors=("sip:bob@example.com",))
        )
        for body in ("one", "two"):
            d = first.messenger.send(
                MessageRequest(
                    sender_handle="+4930123", body=body, aor="sip:bob@example.com"
                )
            )
            assert d is not None
            yield d
    finally:
        yield first.stopService()

    second = _start(config_path)
    try:
        device = yield _connect_device(second, "iphone-1")
        assert (yield device.next_frame())["type"] == "welcome"
        first_message = yield device.next_frame()
        second_message = yield device.next_frame()
        assert [first_message["body"], second_message["body"]] == ["one", "two"]
        for frame in (first_message, second_message):
            device.transport.write(_frame({"type": "ack", "id": frame["id"]}))
        device.transport.write(_frame({"type": "bye"}))
        yield device.lost
        assert second.registry is not None
        assert second.registry.pending_messages("iphone-1", time.time()) == []
    finally:
        yield second.stopService()


class _SipClient(Protocol):
    """Collects whole SIP responses off a stream connection."""

    def __init__(self) -> None:
        self.buffer = b""
        self.waiting: list[tuple[int, Deferred[list[bytes]]]] = []

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        self._check()

    def responses(self, count: int) -> Deferred[list[bytes]]:
        d: Deferred[list[bytes]] = Deferred()
        self.waiting.append((count, d))
        self._check()
        return d.addTimeout(10, reactor)  # type: ignore[arg-type]

    def _check(self) -> None:
        whole = [m for m in self.buffer.split(b"\r\n\r\n")[:-1] if m]
        for count, d in list(self.waiting):
            if len(whole) >= count:
                self.waiting.remove((count, d))
                d.callback(whole[:count])


_SIP_TLS_REQUEST = (
    b"%s sip:%s SIP/2.0\r\n"
    b"Via: SIP/2.0/TLS 127.0.0.1:5071;branch=z9hG4bK-tls-%d\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:core@example.com>;tag=tls%d\r\n"
    b"To: <sip:%s>\r\n"
    b"Call-ID: tls-%d@127.0.0.1\r\n"
    b"CSeq: 1 %s\r\n"
    b"Content-Length: 0\r\n\r\n"
)


@pytest.mark.integration
@pytest_twisted.inlineCallbacks
def test_sip_over_tls_answers_options_and_invites(tmp_path: Path) -> Any:
    """The SIP TLS listener (enabled with the dev certificate) serves OPTIONS
    and INVITE over one TLS connection like the UDP and TCP ones: 200 with
    Allow, and 100 then 404 with X-Push-Status for an AOR nobody registered."""
    environ = {
        **EPHEMERAL,
        "VOIPGW_SIP__TLS__ENABLED": "true",
        "VOIPGW_SIP__TLS__PORT": "0",
    }
    config = load_config(example_in(tmp_path), environ=environ)
    service = build_service(config, reactor)  # type: ignore[arg-type]
    service.startService()
    try:
        address = service.listeners["sip-tls"].address
        assert address is not None and config.sip.tls.cert is not None
        options = optionsForClientTLS(
            "localhost",
            trustRoot=Certificate.loadPEM(config.sip.tls.cert.read_bytes()),
        )
        endpoint = endpoints.SSL4ClientEndpoint(reactor, *address, options)
        client = yield endpoints.connectProtocol(endpoint, _SipClient())
        client.transport.write(
            _SIP_TLS_REQUEST
            % (b"OPTIONS", b"gw@127.0.0.1", 1, 1, b"gw@127.0.0.1", 1, b"OPTIONS")
            + _SIP_TLS_REQUEST
            % (
                b"INVITE",
                b"nobody@example.com",
                2,
                2,
                b"nobody@example.com",
                2,
                b"INVITE",
            )
        )
        first, second = yield client.responses(2)
        assert first.startswith(b"SIP/2.0 200 ")
        assert b"\r\nAllow: " in first
        assert b"Call-ID: tls-1@127.0.0.1" in first
        assert second.startswith(b"SIP/2.0 100 Trying\r\n")
        _, _, final = yield client.responses(3)
        assert final.startswith(b"SIP/2.0 404 ")
        assert b"\r\nX-Push-Status: none" in final
        assert b"Via: SIP/2.0/TLS 127.0.0.1:5071;branch=z9hG4bK-tls-2" in final
        client.transport.loseConnection()
    finally:
        yield service.stopService()
