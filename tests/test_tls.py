"""gateway.tls: the cheaper TLS record path is what every client connection uses."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock

import gateway.http2._agent as agent_module
from gateway.http2 import H2Agent
from gateway.tls import FastTLSFactory, FastTLSProtocol, TLSClientEndpoint


class RecordingEndpoint:
    """Stands in for the TCP endpoint: builds the protocol, connects nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.factories: list[Any] = []
        RecordingEndpoint.last = self

    last: RecordingEndpoint

    def connect(self, factory: Any) -> Deferred[Any]:
        self.factories.append(factory)
        return succeed(factory.buildProtocol(None))


def test_endpoint_wraps_in_fast_tls_and_fires_with_the_inner_protocol() -> None:
    """``TLSClientEndpoint`` is ``wrapClientTLS`` with ``FastTLSFactory``."""
    tcp = RecordingEndpoint()
    inner = Protocol()
    endpoint = TLSClientEndpoint(
        agent_module.optionsForClientTLS("apns.example"), tcp, MemoryReactorClock()
    )
    d = endpoint.connect(Factory.forProtocol(lambda: inner))
    (factory,) = tcp.factories
    assert isinstance(factory, FastTLSFactory)
    assert d.result is inner


def test_h2_agent_connects_through_fast_tls(monkeypatch: pytest.MonkeyPatch) -> None:
    """The APNs connection's records go through ``FastTLSProtocol`` (immediate
    writes, no ``callLater(0)`` per write), as the device sockets' do."""
    monkeypatch.setattr(agent_module, "HostnameEndpoint", RecordingEndpoint)
    agent = H2Agent(MemoryReactorClock(), ping_interval=None)
    agent.request(b"POST", b"https://api.push.apple.com/3/device/abc")
    (factory,) = RecordingEndpoint.last.factories
    assert isinstance(factory, FastTLSFactory)
    assert factory.protocol is FastTLSProtocol
