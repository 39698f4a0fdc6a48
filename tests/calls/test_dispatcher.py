"""The dispatcher with fake delivery paths: frames, pushes, timers, limits, resume."""

from __future__ import annotations

import json

import attrs
import pytest
from gw_fakes import FakeApns, FakeHub
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from gateway.apns import Delivered, Failed, TokenRejected
from gateway.calls.dispatcher import (
    ActiveCall,
    CallRequest,
    Dispatcher,
    DispatcherSettings,
)
from gateway.calls.machine import PUSH_FAILED_REASON, RATE_LIMITED_REASON, Final
from gateway.localpush.frames import CallCancelFrame, CallFrame
from gateway.localpush.hub import ACK_TIMEOUT, DeliveryResult
from gateway.store import Binding, Device, MemoryPersister, Registry

AOR = "sip:bob@example.com"
PHONE = Device("phone", (AOR,), "aa" * 32, "bb" * 32, "com.example.voip", "production")
IPAD = Device("ipad", (AOR,), "cc" * 32, "dd" * 32, "com.example.voip", "sandbox")


@attrs.define
class Listener:
    events: list[tuple[str, str, Final | None]] = attrs.field(factory=list)

    def call_ringing(self, call: ActiveCall) -> None:
        self.events.append(("ringing", call.push_status, None))

    def call_ended(self, call: ActiveCall) -> None:
        self.events.append(("ended", call.push_status, call.final))


@attrs.frozen
class Env:
    clock: Clock
    registry: Registry
    hub: FakeHub
    apns: FakeApns
    dispatcher: Dispatcher


@pytest.fixture
def env() -> Env:
    clock = Clock()
    registry = Registry(MemoryPersister(), clock)
    registry.load()
    registry.put_device(PHONE)
    registry.put_device(IPAD)
    hub, apns = FakeHub(), FakeApns()
    settings = DispatcherSettings(
        callee_push_limit=2, caller_push_limit=100, bundle_id="com.example.voip"
    )
    ids = iter(f"00000000-0000-4000-8000-{n:012d}" for n in range(1, 1000))
    dispatcher = Dispatcher(
        clock, registry, hub, apns, settings, new_call_id=lambda: next(ids)
    )
    return Env(clock, registry, hub, apns, dispatcher)


REQ = CallRequest(
    aor=AOR,
    caller_handle="+4930123",
    caller_display_name="Alice",
    headers=(("X-Customer-Id", "42"),),
)


def test_online_acked_offline_pushed_180_once(env: Env) -> None:
    """Local push first where a session is open, APNs where not; one 180."""
    env.hub.online.add("phone")
    listener = Listener()
    call = env.dispatcher.start(REQ, listener)
    assert call is not None
    [(device_id, frame, _)] = env.hub.sent
    assert device_id == "phone"
    assert isinstance(frame, CallFrame)
    assert frame.call_id == call.call_id
    assert frame.headers == (("X-Customer-Id", "42"),)
    assert frame.expires_at == 30.0
    [(push, _)] = env.apns.pushes
    assert push.device_token == "cc" * 32
    assert push.topic == "com.example.voip.voip"
    assert push.environment.value == "sandbox"
    payload = json.loads(push.payload)
    assert payload["callUUID"] == call.call_id
    assert payload["headers"] == {"X-Customer-Id": "42"}
    env.hub.ack(0)
    env.apns.answer(0, Delivered("apns-1"))
    assert listener.events == [("ringing", "local;acked,apns;pending", None)]
    assert call.push_status == "local;acked,apns;accepted"


def test_ack_timeout_falls_back_to_push(env: Env) -> None:
    """A call frame not acked in time goes out as a VoIP push instead."""
    env.hub.online.add("phone")
    env.dispatcher.start(attrs.evolve(REQ, device_ids=("phone",)), Listener())
    assert env.apns.pushes == []
    env.hub.ack(0, delivered=False, reason=ACK_TIMEOUT)
    assert [p.device_token for p, _ in env.apns.pushes] == ["aa" * 32]


def test_ring_timeout_cancels_and_sends_missed_alerts(env: Env) -> None:
    """Ring timeout: 480, call_cancel unanswered over the socket, alert where none."""
    env.hub.online.add("phone")
    listener = Listener()
    call = env.dispatcher.start(REQ, listener)
    assert call is not None
    env.hub.ack(0)
    env.apns.answer(0, Delivered("apns-1"))
    env.clock.advance(30)
    assert listener.events[-1] == ("ended", "local;acked,apns;accepted", Final(480))
    cancel = env.hub.sent[1][1]
    assert cancel == CallCancelFrame(call_id=call.call_id, reason="unanswered")
    [alert] = [p for p, _ in env.apns.pushes if p.push_type.value == "alert"]
    assert alert.device_token == "dd" * 32
    assert alert.topic == "com.example.voip"
    assert json.loads(alert.payload)["aps"]["alert"]["loc-key"] == "MISSED_CALL"


def test_cancel_answered_elsewhere_no_missed_alert(env: Env) -> None:
    """CANCEL answered_elsewhere: 487 and no missed-call alert."""
    listener = Listener()
    call = env.dispatcher.start(REQ, listener)
    assert call is not None
    env.apns.answer(0, Delivered("a"))
    env.apns.answer(1, Delivered("b"))
    assert env.dispatcher.cancel(call.call_id, "answered_elsewhere") is True
    assert env.dispatcher.cancel(call.call_id, "answered_elsewhere") is False
    assert listener.events[-1][2] == Final(487)
    assert all(p.push_type.value == "voip" for p, _ in env.apns.pushes)


def test_declined_from_device_is_603(env: Env) -> None:
    """call_event declined from every device: 603."""
    env.hub.online.update({"phone", "ipad"})
    listener = Listener()
    call = env.dispatcher.start(REQ, listener)
    assert call is not None
    env.hub.ack(0)
    env.hub.ack(1)
    env.dispatcher.on_call_event("phone", call.call_id, "declined")
    env.dispatcher.on_call_event("stranger", call.call_id, "declined")  # ignored
    env.dispatcher.on_call_event("ipad", "no-such-call", "declined")  # ignored
    assert listener.events[-1][0] == "ringing"
    env.dispatcher.on_call_event("ipad", call.call_id, "declined")
    assert listener.events[-1][2] == Final(603)


def test_token_rejected_and_failures_make_480(env: Env) -> None:
    """Every push rejected or failed: 480 Push failed, statuses per device."""
    listener = Listener()
    env.dispatcher.start(REQ, listener)
    env.apns.answer(0, TokenRejected("Unregistered"))
    env.apns.answer(1, Failed(400, "BadTopic"))
    assert listener.events == [
        (
            "ended",
            "apns;rejected=Unregistered,apns;failed=BadTopic",
            Final(480, PUSH_FAILED_REASON),
        )
    ]


def test_push_rate_limit_per_callee_is_486(env: Env) -> None:
    """Over the callee's push limit: 486 with the Reason, and no push sent."""
    for _ in range(2):
        env.dispatcher.start(REQ, Listener())
    before = len(env.apns.pushes)
    listener = Listener()
    env.dispatcher.start(REQ, listener)
    assert len(env.apns.pushes) == before
    assert listener.events == [
        (
            "ended",
            "apns;rate_limited,apns;rate_limited",
            Final(486, RATE_LIMITED_REASON),
        )
    ]


def test_resume_replays_call_to_woken_app(env: Env) -> None:
    """The app woken by the push connects: the ringing call is replayed."""
    call = env.dispatcher.start(attrs.evolve(REQ, device_ids=("ipad",)), Listener())
    assert call is not None
    env.apns.answer(0, Delivered("a"))
    env.hub.online.add("ipad")
    env.dispatcher.on_session_up("ipad", None)  # type: ignore[arg-type]
    assert isinstance(env.hub.sent[-1][1], CallFrame)
    assert len(env.apns.pushes) == 1  # never a second VoIP push


def test_bindings_from_register_are_targets(env: Env) -> None:
    """RFC 8599 bindings ring too: env.apns tokens and lpc devices."""
    aor = "sip:carol@example.com"
    env.registry.put_binding(
        Binding(aor, "apns", "ee" * 32, "TEAM.com.other.voip", 1e9)
    )
    env.registry.put_binding(Binding(aor, "lpc", "phone", "", 1e9))
    env.hub.online.add("phone")
    call = env.dispatcher.start(CallRequest(aor=aor, caller_handle="x"), Listener())
    assert call is not None
    assert env.hub.sent[0][0] == "phone"
    [(push, _)] = env.apns.pushes
    assert push.topic == "com.other.voip"  # pn-param TEAM.<bundle>.voip
    assert "ee" * 32 not in "".join(call.devices)  # ids never reveal the token


def test_unknown_aor_and_reaping(env: Env) -> None:
    """No devices: None (SIP 404). Ended calls are forgotten after the window."""
    assert (
        env.dispatcher.start(
            CallRequest(aor="sip:nobody@x", caller_handle="x"), Listener()
        )
        is None
    )
    call = env.dispatcher.start(REQ, Listener())
    assert call is not None
    env.dispatcher.cancel(call.call_id, "remote_ended")
    assert env.dispatcher.get(call.call_id) is call
    assert (env.dispatcher.active_count, env.dispatcher.held_count) == (0, 1)
    env.clock.advance(60)
    assert env.dispatcher.get(call.call_id) is None
    assert env.dispatcher.active_count == 0
    assert env.dispatcher.held_count == 0
    assert env.clock.getDelayedCalls() == []


def test_expires_caps_ring_timeout(env: Env) -> None:
    """An INVITE's Expires shortens the ring timeout, never lengthens it."""
    listener = Listener()
    env.dispatcher.start(attrs.evolve(REQ, ring_timeout_s=5), listener)
    env.clock.advance(5)
    assert listener.events[-1][2] == Final(480)


def test_forgotten_calls_are_freed_without_the_cycle_collector(env: Env) -> None:
    """An ended call, once forgotten, holds no reference cycle: refcounting
    frees it, so no full GC pass is needed to reclaim calls."""
    import gc
    import weakref

    gc.collect()
    gc.disable()
    try:
        env.hub.online.add("phone")
        call = env.dispatcher.start(REQ, Listener())
        assert call is not None
        env.hub.ack(0)
        env.apns.answer(0, Delivered("a"))
        env.dispatcher.cancel(call.call_id, "remote_ended")
        for _, _, d in env.hub.sent:
            if not d.called:
                d.callback(DeliveryResult(delivered=True))
        for _, d in env.apns.pushes:
            if not d.called:
                d.callback(Delivered("x"))
        env.clock.advance(60)
        refs = [weakref.ref(call), weakref.ref(call.machine)]
        del call
        env.hub.sent.clear()
        env.apns.pushes.clear()
        assert [r() for r in refs] == [None, None]
    finally:
        gc.enable()


@attrs.define
class _Observer:
    """A ``CallObserver`` that records into a shared log, and may raise."""

    name: str
    log: list[str]
    raises: bool = False

    def _heard(self, what: str, call: ActiveCall) -> None:
        self.log.append(f"{self.name} {what} {call.call_id[-1]}")
        if self.raises:
            raise RuntimeError("observer bug")

    def call_started(self, call: ActiveCall) -> None:
        self._heard("started", call)

    def call_ringing(self, call: ActiveCall) -> None:
        self._heard("ringing", call)

    def call_ended(self, call: ActiveCall) -> None:
        self._heard("ended", call)


def test_observers_hear_start_ring_end_before_the_listener(env: Env) -> None:
    """Observers hear each call start, ring and end, before its listener; one
    that raises is logged and neither the call nor the others notice."""
    heard: list[str] = []
    env.dispatcher.add_observer(_Observer("broken", heard, raises=True))
    env.dispatcher.add_observer(_Observer("ok", heard))
    env.hub.online.add("phone")
    listener = Listener()
    with capturedLogs() as events:
        call = env.dispatcher.start(REQ, listener)
        assert call is not None
        assert heard == ["broken started 1", "ok started 1"]
        env.hub.ack(0)
        assert listener.events == [("ringing", "local;acked,apns;pending", None)]
        assert env.dispatcher.cancel(call.call_id, "remote_ended")
    assert heard == [
        f"{name} {what} 1"
        for what in ("started", "ringing", "ended")
        for name in ("broken", "ok")
    ]
    assert [event for event, _, _ in listener.events] == ["ringing", "ended"]
    failures = [e for e in events if "log_failure" in e]
    assert len(failures) == 3
