"""The simulator against the real gateway server over TLS on 127.0.0.1."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from sim_helpers import SECRET
from twisted.internet import defer
from twisted.internet.ssl import Certificate, optionsForClientTLS

from gateway.localpush.frames import CallFrame, Party
from gateway.localpush.hub import Hub, InMemoryDeviceDirectory, SessionInfo
from gateway.localpush.server import LocalPushFactory, tls_factory
from gateway.localpush.session import SessionSettings
from gateway.localpush.tls import ServerTLS
from gateway.simulator import (
    Backoff,
    Behaviour,
    GoawayReceived,
    ReconnectScheduled,
    Recorder,
    Simulator,
    Target,
    Welcomed,
    credentials_from_secret,
)


class Listener:
    """A hub SessionListener that keeps call events."""

    def __init__(self) -> None:
        self.call_events: list[tuple[str, str, str]] = []
        self.changed: defer.Deferred[None] | None = None

    def on_session_up(self, device_id: str, info: SessionInfo) -> None:
        """Not needed here."""

    def on_session_down(self, device_id: str, reason: str) -> None:
        """Not needed here."""

    def on_call_event(self, device_id: str, call_id: str, event: str) -> None:
        self.call_events.append((device_id, call_id, event))


def _serve(tls_pair: tuple[Path, Path], port: int = 0) -> tuple[Any, Hub, Listener]:
    from twisted.internet import reactor

    hub = Hub(reactor, InMemoryDeviceDirectory())
    listener = Listener()
    hub.add_listener(listener)
    factory = LocalPushFactory(
        settings=SessionSettings(), secret=SECRET, hub=hub, clock=reactor
    )
    listening = reactor.listenTCP(
        port, tls_factory(factory, ServerTLS(*tls_pair)), interface="127.0.0.1"
    )
    return listening, hub, listener


@pytest.mark.integration
@pytest_twisted.inlineCallbacks
def test_simulator_against_real_server(tls_pair: tuple[Path, Path]) -> Any:
    """Call delivered and acked, call_event declined reaches the hub listener,
    and after a graceful shutdown the device reconnects to the restarted server."""
    from twisted.internet import reactor

    port1, hub, listener = _serve(tls_pair)
    port_number = port1.getHost().port
    recorder = Recorder()
    tls = optionsForClientTLS(
        "localhost", trustRoot=Certificate.loadPEM(tls_pair[0].read_bytes())
    )
    sim = Simulator(
        reactor,
        Target(host="127.0.0.1", port=port_number, tls=tls),
        credentials_from_secret(SECRET, 1, now=time.time()),
        observer=recorder,
        behaviour=Behaviour(on_call="declined", call_event_delay_s=0.05),
        backoff=Backoff(base_s=0.05, cap_s=0.2),
    )
    port2 = None
    try:
        sim.start()
        yield recorder.wait_for(lambda r: isinstance(r.event, Welcomed), reactor, 5)
        assert hub.is_online("sim-1")

        # Arrange / Act: a call through the hub
        spec = CallFrame(
            call_id="c-42",
            caller=Party(handle="+4930123", display_name="Alice"),
            video=False,
            to="sip:user1@example.com",
            expires_at=time.time() + 60,
        )
        result = yield hub.deliver("sim-1", spec).addTimeout(5, reactor)
        # Assert: acked by the simulator
        assert result.delivered
        (_, frame, _) = recorder.frames("call")[0]
        assert frame.get("call_id") == "c-42" and frame.get("id") == result.frame_id

        # the declined call_event reaches the hub's listener
        for _ in range(100):
            if listener.call_events:
                break
            yield _sleep(0.02)
        assert listener.call_events == [("sim-1", "c-42", "declined")]

        # graceful shutdown: goaway, then the device comes back to a new server
        yield hub.shutdown(window_s=0.5).addTimeout(5, reactor)
        yield port1.stopListening()
        port2, hub2, _ = _serve(tls_pair, port_number)
        goaway = recorder.events(GoawayReceived)[0].event
        assert goaway.reason == "shutdown"
        assert ReconnectScheduled(delay_s=0.0, after_goaway=True) in [
            r.event for r in recorder.records
        ]
        for _ in range(200):
            if hub2.is_online("sim-1") and len(recorder.events(Welcomed)) >= 2:
                break
            yield _sleep(0.02)
        assert hub2.is_online("sim-1")
        assert len(recorder.events(Welcomed)) >= 2
    finally:
        yield sim.stop().addTimeout(5, reactor)
        yield port1.stopListening()
        if port2 is not None:
            yield port2.stopListening()


def _sleep(seconds: float) -> defer.Deferred[None]:
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    return deferLater(reactor, seconds, lambda: None)
