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
