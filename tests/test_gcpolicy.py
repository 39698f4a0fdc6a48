"""The GC policy: its schedule, what freezing keeps and frees, and that the
gateway's own objects need no cycle collector (what makes freezing safe)."""

from __future__ import annotations

import gc
import json
import socket
import time
import weakref
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import pytest_twisted
import treq
from gw_device import Device
from gw_example import EPHEMERAL, example_in
from twisted.internet import endpoints, reactor, task
from twisted.internet.defer import Deferred
from twisted.internet.ssl import Certificate, optionsForClientTLS

from gateway.app import Gateway, build_service
from gateway.calls.dispatcher import CallRequest
from gateway.config import GcConfig, load_config
from gateway.devfiles import read_jwt_secret
from gateway.devicetoken import mint_device_token
from gateway.gcpolicy import Collector, GcPolicy
from gateway.localpush.codec import encode_frame


@attrs.define
class FakeGc:
    """Records the policy's gc calls in order."""

    calls: list[tuple[Any, ...]] = attrs.field(factory=list)
    threshold: tuple[int, int, int] = (700, 10, 10)

    def collector(self) -> Collector:
        return Collector(
            collect=lambda gen: self._record("collect", gen) or 0,
            freeze=lambda: self._record("freeze"),
            unfreeze=lambda: self._record("unfreeze"),
            set_threshold=self._set_threshold,
            get_threshold=lambda: self.threshold,
            freeze_count=lambda: 123,
            clock=lambda: 0.0,
        )

    def _record(self, *call: Any) -> None:
        self.calls.append(call)

    def _set_threshold(self, g0: int, g1: int, g2: int) -> None:
        self.calls.append(("threshold", g0, g1, g2))
        self.threshold = (g0, g1, g2)

    def take(self) -> list[tuple[Any, ...]]:
        calls, self.calls = self.calls, []
        return calls


FREEZE = [("collect", 2), ("freeze",)]


def _started(config: GcConfig) -> tuple[task.Clock, FakeGc, GcPolicy]:
    """A policy on a fake clock and a recording collector, started."""
    clock = task.Clock()
    fake = FakeGc()
    policy = GcPolicy(clock, config, fake.collector())
    policy.startService()
    return clock, fake, policy


def test_schedule_freezes_at_start_and_every_interval_and_sweeps() -> None:
    """Start: larger gen-0 threshold, collect + freeze; then a freeze every
    freeze_interval_s and an unfreeze/collect/freeze sweep every
    full_interval_s; stop puts the threshold back and stops both."""
    clock, fake, policy = _started(
        GcConfig(freeze_interval_s=1.0, full_interval_s=10.0, gen0_threshold=5000)
    )
    assert fake.take() == [("threshold", 5000, 10, 10), *FREEZE]
    clock.advance(1.0)
    assert fake.take() == FREEZE
    clock.pump([1.0] * 8)
    assert fake.take() == FREEZE * 8
    clock.advance(1.0)  # 10 s: both steps are due, in either order
    calls = fake.take()
    sweep = [("unfreeze",), ("collect", 2), ("freeze",)]
    assert calls in (FREEZE + sweep, sweep + FREEZE)
    assert (policy.freezes, policy.sweeps) == (11, 1)
    policy.stopService()
    assert fake.take() == [("unfreeze",), ("threshold", 700, 10, 10)]
    clock.advance(100.0)
    assert fake.take() == []
    assert clock.getDelayedCalls() == []


def test_zero_turns_steps_off() -> None:
    """0 for both intervals and the threshold: only the start-up freeze."""
    clock, fake, policy = _started(
        GcConfig(freeze_interval_s=0, full_interval_s=0, gen0_threshold=0)
    )
    assert fake.take() == FREEZE
    assert clock.getDelayedCalls() == []
    policy.stopService()
    assert fake.take() == [("unfreeze",)]


class Node:
    """A gc-tracked object that can take part in a cycle."""

    other: Node | None = None


@pytest.fixture
def real_policy() -> Iterator[GcPolicy]:
    """A policy on the real collector, with the collector off in between so
    only the policy's own steps collect; unfreezes and re-enables after."""
    was_enabled = gc.isenabled()
    gc.disable()
    policy = GcPolicy(
        task.Clock(),
        GcConfig(freeze_interval_s=0, full_interval_s=0, gen0_threshold=0),
    )
    try:
        yield policy
    finally:
        gc.unfreeze()
        if was_enabled:
            gc.enable()


def _cycle() -> weakref.ref[Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_frozen_objects_are_still_freed_by_reference_counting(
    real_policy: GcPolicy,
) -> None:
    """Freezing only hides objects from the cycle collector: an acyclic
    object that loses its last reference is freed at once."""
    node = Node()
    ref = weakref.ref(node)
    real_policy.freeze_survivors()
    assert gc.get_freeze_count() > 0
    del node
    assert ref() is None


def test_freeze_collects_young_cycles_and_sweep_collects_frozen_ones(
    real_policy: GcPolicy,
) -> None:
    """A cycle that is garbage before a freeze is collected by it; one that
    was alive when frozen and dies later waits for the sweep."""
    dead_before = _cycle()
    real_policy.freeze_survivors()
    assert dead_before() is None

    holder = [Node(), Node()]
    holder[0].other, holder[1].other = holder[1], holder[0]
    alive_then = weakref.ref(holder[0])
    real_policy.freeze_survivors()
    holder.clear()
    real_policy.freeze_survivors()
    assert alive_then() is not None  # frozen garbage: kept until a sweep
    real_policy.sweep()
    assert alive_then() is None
    assert real_policy.sweeps == 1


# The gateway's own objects must not need the cycle collector, or frozen
# sessions and calls would be kept until the hourly sweep.

NO_GC_STEPS = {
    **EPHEMERAL,
    "VOIPGW_GC__FREEZE_INTERVAL_S": "0",
    "VOIPGW_GC__FULL_INTERVAL_S": "0",
    "VOIPGW_GC__GEN0_THRESHOLD": "0",
    "VOIPGW_CALLS__RESUME_WINDOW_S": "0.2",
    "VOIPGW_CALLS__RING_TIMEOUT_S": "1",
}


@pytest.fixture
def quiet_gateway(tmp_path: Path) -> Generator[Gateway, None, None]:
    config = load_config(example_in(tmp_path), environ=NO_GC_STEPS)
    service = build_service(config, reactor)  # type: ignore[arg-type]
    service.startService()
    yield service
    pytest_twisted.blockon(service.stopService())


def _ours(obj: object) -> bool:
    """Server-side objects: the gateway's classes and accepted connections
    (the test's clients make cycles of their own, e.g. certificate checks)."""
    kind = type(obj)
    return kind.__module__.startswith("gateway") or (
        kind.__module__ == "twisted.internet.tcp" and kind.__name__ == "Server"
    )


def _cyclic_garbage() -> list[str]:
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        found = sorted({type(o).__qualname__ for o in gc.garbage if _ours(o)})
    finally:
        gc.garbage.clear()
        gc.set_debug(0)
    return found


def _frame(obj: dict[str, Any]) -> bytes:
    return encode_frame(obj, 16384)


class Declining(Device):
    """Acks every frame that wants it and declines every call."""

    def dataReceived(self, data: bytes) -> None:
        for frame in self.decoder.feed(data):
            body = dict(frame.body)
            if body["type"] in ("call", "call_cancel", "message"):
                self.transport.write(_frame({"type": "ack", "id": body["id"]}))
                if body["type"] == "call":
                    declined = {"type": "call_event", "event": "declined"}
                    declined["call_id"] = body["call_id"]
                    self.transport.write(_frame(declined))
            else:
                self.frames.append(body)
        while self.frames and self.waiting:
            self.waiting.pop(0).callback(self.frames.pop(0))


def _sleep(seconds: float) -> Deferred[None]:
    return task.deferLater(reactor, seconds, lambda: None)


@attrs.define
class Ended:
    done: Deferred[None] = attrs.field(factory=Deferred)

    def call_ringing(self, call: Any) -> None:
        pass

    def call_ended(self, call: Any) -> None:
        self.done.callback(None)


def _invite(port: int, call_id: str) -> bytes:
    return (
        f"INVITE sip:bob@example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:9;rport;branch=z9hG4bK{call_id}\r\n"
        f"From: <sip:alice@example.com>;tag=a{call_id}\r\n"
        f"To: <sip:bob@example.com>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
        f"Contact: <sip:alice@127.0.0.1:9>\r\nContent-Length: 0\r\n\r\n"
    ).encode()


@pytest.mark.integration
@pytest_twisted.inlineCallbacks
def test_sessions_calls_and_requests_leave_no_cycles(
    quiet_gateway: Gateway,
) -> Any:
    """With the collector off: sessions opened, pinged and closed, calls
    over local push (dispatcher, SIP INVITE over UDP, API POST /v1/calls)
    ended and dropped, leave no gateway object for the cycle collector."""
    gateway = quiet_gateway
    config = gateway.config
    assert config.localpush.cert is not None
    assert config.localpush.jwt_secret_file is not None
    assert config.api.keys_file is not None
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        address = gateway.listeners["localpush"].address
        assert address is not None
        options = optionsForClientTLS(
            "localhost",
            trustRoot=Certificate.loadPEM(config.localpush.cert.read_bytes()),
        )
        secret = read_jwt_secret(config.localpush.jwt_secret_file)
        devices = []
        for i in range(3):
            endpoint = endpoints.SSL4ClientEndpoint(reactor, *address, options)
            device = yield endpoints.connectProtocol(endpoint, Declining())
            token = mint_device_token(
                secret, f"gc-{i}", "sip:bob@example.com", now=time.time()
            )
            device.transport.write(
                _frame(
                    {"type": "hello", "v": 1, "device_id": f"gc-{i}", "token": token}
                )
            )
            assert (yield device.next_frame())["type"] == "welcome"
            device.transport.write(_frame({"type": "ping", "id": f"p{i}"}))
            assert (yield device.next_frame())["type"] == "pong"
            devices.append(device)

        assert gateway.dispatcher is not None
        ended = Ended()
        gateway.dispatcher.start(
            CallRequest(aor="sip:bob@example.com", caller_handle="+4930"), ended
        )
        yield ended.done.addTimeout(5, reactor)

        sip = gateway.listeners["sip-udp"].address
        assert sip is not None
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer.bind(("127.0.0.1", 0))
        peer.setblocking(False)
        peer.sendto(_invite(sip[1], "gccall1"), ("127.0.0.1", sip[1]))

        api = gateway.listeners["api"].address
        assert api is not None
        key = config.api.keys_file.read_text().split()[0]
        response = yield treq.post(
            f"http://127.0.0.1:{api[1]}/v1/calls",
            data=json.dumps(
                {"to": "sip:bob@example.com", "caller": {"handle": "+4930"}}
            ).encode(),
            headers={
                "Authorization": f"Bearer {key}",
                "Content-Type": "application/json",
            },
            persistent=False,
        )
        assert response.code == 201, (yield response.text())
        yield response.content()

        yield _sleep(1.5)  # ring timeouts, resume windows, SIP timers run out
        replies = []
        while True:
            try:
                replies.append(peer.recv(65536).split(b"\r\n", 1)[0])
            except BlockingIOError:
                break
        peer.close()
        assert b"SIP/2.0 100 Trying" in replies
        assert any(r.startswith((b"SIP/2.0 6", b"SIP/2.0 4")) for r in replies)

        for device in devices:
            device.transport.write(_frame({"type": "bye"}))
            yield device.lost
        devices.clear()
        yield _sleep(0.3)
        assert gateway.hub is not None and gateway.hub.online_count == 0
        assert _cyclic_garbage() == []
    finally:
        if was_enabled:
            gc.enable()


def test_the_cycle_check_finds_a_gateway_cycle() -> None:
    """The check above is not vacuous: a gateway object in a garbage cycle
    is reported."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        policy = GcPolicy(task.Clock(), GcConfig())
        policy.me = policy  # type: ignore[attr-defined]
        del policy
        assert "GcPolicy" in _cyclic_garbage()
    finally:
        if was_enabled:
            gc.enable()


def test_pauses_are_summed_and_the_longest_kept() -> None:
    """Each pass's pause (the collector's clock around it) is summed, the
    longest kept, and frozen objects read from the collector."""
    ticks = iter([0.0, 0.004, 1.0, 1.010, 2.0, 2.002])
    fake = FakeGc()
    policy = GcPolicy(
        task.Clock(),
        GcConfig(),
        attrs.evolve(fake.collector(), clock=lambda: next(ticks)),
    )
    policy.freeze_survivors()
    policy.sweep()
    policy.freeze_survivors()
    assert (policy.freezes, policy.sweeps) == (2, 1)
    assert policy.last_pause_s == pytest.approx(0.002)
    assert policy.longest_pause_s == pytest.approx(0.010)
    assert policy.pause_total_s == pytest.approx(0.016)
    assert policy.frozen_objects() == 123
