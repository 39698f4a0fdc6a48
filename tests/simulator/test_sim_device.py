"""SimDevice and Simulator: reconnects, pings, bye, ramp-up, on task.Clock."""

from __future__ import annotations

import random

from sim_helpers import CREDS, FakeConnector, call, welcome, wire
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from gateway.simulator import (
    Backoff,
    Behaviour,
    Credentials,
    Disconnected,
    ReconnectScheduled,
    Recorder,
    SimDevice,
    Simulator,
    Target,
)


def _device(
    clock: Clock, connector: FakeConnector, recorder: Recorder, **kw: object
) -> SimDevice:
    return SimDevice(
        CREDS,
        clock=clock,
        connector=connector,
        observer=recorder,
        backoff=Backoff(base_s=1.0, cap_s=8.0, jitter=0.0),
        rng=random.Random(1),
        **kw,  # type: ignore[arg-type]
    )


def _lose(connector: FakeConnector, why: Exception | None = None) -> None:
    proto, _ = connector.last
    proto.connectionLost(Failure(why or ConnectionDone()))


def test_hello_then_pings_on_the_clock() -> None:
    """The device says hello on connect and pings every heartbeat_s after welcome."""
    clock, connector, recorder = Clock(), FakeConnector(), Recorder()
    device = _device(clock, connector, recorder)
    device.start()
    assert [f["type"] for f in connector.take()] == ["hello"]
    proto, _ = connector.last
    clock.advance(5)
    proto.dataReceived(welcome(heartbeat_s=30))
    assert device.is_open
    clock.advance(29.9)
    assert connector.take() == []
    clock.advance(0.1)
    assert connector.take() == [{"type": "ping", "id": "p-1"}]
    clock.advance(30)
    assert connector.take() == [{"type": "ping", "id": "p-2"}]


def test_delayed_ack_through_the_adapter() -> None:
    """An ack delay is kept by the protocol's timer on the injected clock."""
    clock, connector, recorder = Clock(), FakeConnector(), Recorder()
    device = _device(clock, connector, recorder, behaviour=Behaviour(ack_delay_s=0.05))
    device.start()
    proto, _ = connector.last
    proto.dataReceived(welcome())
    connector.take()
    proto.dataReceived(call("f-1"))
    assert connector.take() == []
    clock.advance(0.05)
    assert connector.take() == [{"type": "ack", "id": "f-1"}]


def test_goaway_reconnects_after_given_ms() -> None:
    """After goaway the device reconnects exactly reconnect_after_ms later."""
    clock, connector, recorder = Clock(), FakeConnector(), Recorder()
    device = _device(clock, connector, recorder)
    device.start()
    proto, transport = connector.last
    proto.dataReceived(welcome())
    proto.dataReceived(
        wire({"type": "goaway", "reason": "shutdown", "reconnect_after_ms": 1500})
    )
    assert transport.disconnecting  # we close after goaway
    _lose(connector)
    assert ReconnectScheduled(delay_s=1.5, after_goaway=True) in [
        r.event for r in recorder.records
    ]
    clock.advance(1.499)
    assert len(connector.protocols) == 1
    clock.advance(0.001)
    assert len(connector.protocols) == 2
    assert [f["type"] for f in connector.take()] == ["hello"]
    assert device.attempts == 2


def test_loss_backs_off_and_welcome_resets() -> None:
    """Lost connections retry after 1, 2, 4 s; a welcome resets the backoff."""
    clock, connector, recorder = Clock(), FakeConnector(), Recorder()
    device = _device(clock, connector, recorder)
    device.start()
    delays = []
    for _ in range(3):
        _lose(connector, ConnectionLost())
        delays.append(recorder.events(ReconnectScheduled)[-1].event.delay_s)
        clock.advance(delays[-1])
    assert delays == [1.0, 2.0, 4.0]
    proto, _ = connector.last
    proto.dataReceived(welcome())
    _lose(connector, ConnectionLost())
    assert recorder.events(ReconnectScheduled)[-1].event.delay_s == 1.0


def test_refused_connect_retries() -> None:
    """A refused attempt is reported and retried with backoff."""
    clock, connector, recorder = Clock(), FakeConnector(), Recorder()
    connector.refuse = 2
    device = _device(clock, connector, recorder)
    device.start()
    clock.advance(1.0)
    clock.advance(2.0)
    assert len(connector.protocols) == 1
    lost = recorder.events(Disconnected)
    assert [r.event.connected for r in lost] == [False, False]


def test_unauthorized_gives_up() -> None:
    """A device whose hello is refused does not hammer the server."""
    clock, connector, recorder = Clock(), FakeConnector(), Recorder()
    device = _device(clock, connector, recorder)
    device.start()
    proto, _ = connector.last
    proto.dataReceived(wire({"type": "error", "code": "unauthorized"}))
    _lose(connector)
    clock.advance(3600)
    assert len(connector.protocols) == 1
    assert recorder.events(ReconnectScheduled) == []


def test_stop_says_bye_and_does_not_reconnect() -> None:
    """stop() sends bye, fires once the connection is gone, and never reconnects."""
    clock, connector, recorder = Clock(), FakeConnector(), Recorder()
    device = _device(clock, connector, recorder)
    device.start()
    proto, transport = connector.last
    proto.dataReceived(welcome())
    connector.take()
    stopped = device.stop()
    assert connector.take() == [{"type": "bye"}]
    assert transport.disconnecting and not stopped.called
    _lose(connector)
    assert stopped.called
    clock.advance(3600)
    assert len(connector.protocols) == 1


def test_stop_aborts_a_close_that_hangs() -> None:
    """If the server never closes after bye, the socket is aborted."""
    clock, connector, recorder = Clock(), FakeConnector(), Recorder()
    device = _device(clock, connector, recorder, close_timeout_s=2.0)
    device.start()
    proto, transport = connector.last
    proto.dataReceived(welcome())
    device.stop()
    clock.advance(2.0)
    assert transport.disconnected  # StringTransport.abortConnection


def test_stop_during_backoff_cancels_retry() -> None:
    """stop() while waiting to reconnect cancels the retry."""
    clock, connector, recorder = Clock(), FakeConnector(), Recorder()
    device = _device(clock, connector, recorder)
    device.start()
    _lose(connector, ConnectionLost())
    assert device.stop().called
    clock.advance(60)
    assert len(connector.protocols) == 1


def test_stop_cancels_pending_connect() -> None:
    """stop() during a connection attempt cancels it without a retry."""
    clock, recorder = Clock(), Recorder()
    pending: list[Deferred[object]] = []

    def slow_connector(proto: object) -> Deferred[object]:
        d: Deferred[object] = Deferred()
        pending.append(d)
        return d

    device = SimDevice(CREDS, clock=clock, connector=slow_connector, observer=recorder)
    device.start()
    assert device.stop().called
    assert recorder.events(Disconnected)[0].event.connected is False
    clock.advance(60)
    assert len(pending) == 1


def test_simulator_ramps_and_spreads_source_addresses() -> None:
    """Devices start at connect_rate per second, bound round-robin to bind_hosts."""
    reactor = MemoryReactorClock()
    creds = [
        Credentials(device_id=f"sim-{n}", token="t", aor=f"sip:u{n}@ex.com")
        for n in range(1, 51)
    ]
    target = Target(host="127.0.0.1", port=9999, bind_hosts=("127.0.0.2", "127.0.0.3"))
    sim = Simulator(reactor, target, creds, observer=Recorder(), connect_rate=100)
    sim.start()
    assert len(reactor.tcpClients) == 1
    for _ in range(10):
        reactor.advance(0.01)
    assert len(reactor.tcpClients) == 11
    for _ in range(100):
        reactor.advance(0.01)
    assert len(reactor.tcpClients) == 50
    assert {c[4] for c in reactor.tcpClients} == {("127.0.0.2", 0), ("127.0.0.3", 0)}
    assert all(c[:2] == ("127.0.0.1", 9999) for c in reactor.tcpClients)
    assert sim.stop().called  # nothing connected: done at once


def _creds(n: int) -> list[Credentials]:
    return [
        Credentials(device_id=f"sim-{i}", token="t", aor=f"sip:u{i}@ex.com")
        for i in range(1, n + 1)
    ]


def test_simulator_slow_rate_and_pending_cap() -> None:
    """A rate under 100/s is kept (credit, not one per step), and max_pending
    holds the ramp while devices are still connecting."""
    reactor = MemoryReactorClock()
    target = Target(host="127.0.0.1", port=9999)
    slow = Simulator(reactor, target, _creds(50), observer=Recorder(), connect_rate=10)
    slow.start()
    for _ in range(100):
        reactor.advance(0.01)
    assert 10 <= len(reactor.tcpClients) <= 12

    reactor = MemoryReactorClock()
    capped = Simulator(
        reactor, target, _creds(50), observer=Recorder(), connect_rate=1000,
        max_pending=3,
    )  # fmt: skip
    capped.start()
    for _ in range(100):
        reactor.advance(0.01)
    assert len(reactor.tcpClients) == 3  # none of them ever connects here
    assert not capped.ramp_done
