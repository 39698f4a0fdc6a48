"""Protocol adapter + hub over StringTransport and a fake clock (no sockets)."""

from __future__ import annotations

from typing import Any

import pytest
from lp_helpers import (
    DEVICE,
    T0,
    RecordingListener,
    World,
    hello,
    not_fired,
    out,
    result_of,
    wire,
)
from twisted.logger import capturedLogs

from gateway.localpush.frames import CallCancelFrame, CallFrame, MessageFrame, Party
from gateway.localpush.hub import (
    NO_SESSION,
    DeliveryResult,
    StoredMessage,
)

CALL = CallFrame(
    call_id="c1",
    caller=Party(handle="+4930123", display_name="Alice"),
    video=False,
    to="sip:bob@example.com",
    expires_at=T0 + 60,
)


# Session life --------------------------------------------------------------------


def test_connection_turns_nagle_off() -> None:
    """Frames leave in the turn they are written, not after the device's
    delayed ACK for the previous one."""
    _, tr = World().connect()
    assert tr.no_delay is True


def test_hello_registers_session() -> None:
    """After hello: welcome sent, device online, listener and directory told."""
    w = World()
    proto, _ = w.device()
    assert w.hub.is_online(DEVICE)
    assert w.listener.calls == [("up", DEVICE)]
    info = w.directory.hellos[DEVICE]
    assert info.session_id == proto.session_id
    assert info.peer == "192.0.2.7"
    assert info.hello.voip_token == "ab" * 32
    assert info.claims.aors == ("sip:bob@example.com",)
    assert w.hub.session_info(DEVICE) == info


def test_handshake_timeout_plain_tcp() -> None:
    """No hello in 10 s on plain TCP: error handshake_timeout, then close."""
    w = World()
    _, tr = w.connect()
    w.clock.advance(9.9)
    assert tr.value() == b"" and not tr.disconnecting
    w.clock.advance(0.1)
    assert [f["code"] for f in out(tr)] == ["handshake_timeout"]
    assert tr.disconnecting and not tr.aborted


def test_handshake_timeout_tls_stalled() -> None:
    """TLS never completed within the timeout: just close, no frame."""
    w = World()
    _, tr = w.connect(tls=True)
    w.clock.advance(10)
    assert tr.value() == b""
    assert tr.aborted


def test_handshake_timeout_tls_up() -> None:
    """TLS is up but no hello came: error handshake_timeout is sent."""
    w = World()
    proto, tr = w.connect(tls=True)
    w.clock.advance(2)
    proto.handshakeCompleted()
    w.clock.advance(8)
    assert [f["code"] for f in out(tr)] == ["handshake_timeout"]
    assert tr.disconnecting and not tr.aborted


def test_bad_hello_closes_without_hub() -> None:
    """A rejected hello closes the connection; the hub never sees a session."""
    w = World()
    proto, tr = w.connect()
    proto.dataReceived(wire(hello(v=2)))
    assert [f["code"] for f in out(tr)] == ["unsupported_version"]
    assert tr.disconnecting
    proto.connectionLost()
    assert w.listener.calls == []


def test_bye_closes_and_reports_down() -> None:
    """bye: the server closes without error; the hub reports the session down."""
    w = World()
    proto, tr = w.device()
    proto.dataReceived(wire({"type": "bye"}))
    assert tr.value() == b""
    assert tr.disconnecting
    assert tr.producer is None  # unregistered, else TLS would hold its close_notify
    assert not w.hub.is_online(DEVICE)
    assert w.listener.calls[-1] == ("down", DEVICE, "bye")


def test_close_timeout_aborts() -> None:
    """A graceful close that does not finish is aborted after close_timeout_s."""
    w = World(close_timeout_s=5)
    proto, tr = w.device()
    proto.dataReceived(wire({"type": "bye"}))
    assert not tr.aborted
    w.clock.advance(5)
    assert tr.aborted


def test_connection_lost_cancels_timers() -> None:
    """After connectionLost no timer stays scheduled on the clock."""
    w = World()
    proto, _ = w.device()
    w.hub.deliver(DEVICE, CALL)
    proto.connectionLost()
    assert w.clock.getDelayedCalls() == []
    assert w.listener.calls[-1] == ("down", DEVICE, "connection_lost")


def test_idle_session_goaway() -> None:
    """No frame for 2.5 x heartbeat_s: goaway idle and close; hub says down."""
    w = World(heartbeat_s=30)
    proto, tr = w.device()
    w.clock.advance(60)
    proto.dataReceived(wire({"type": "ping", "id": "1"}))
    assert out(tr) == [{"type": "pong", "id": "1"}]
    w.clock.advance(74.9)
    assert tr.value() == b""
    w.clock.advance(0.1)
    assert out(tr) == [{"type": "goaway", "reason": "idle", "reconnect_after_ms": 0}]
    assert tr.disconnecting
    assert w.listener.calls[-1] == ("down", DEVICE, "idle")


def test_idle_close_on_the_quarter_second_grid() -> None:
    """Idle deadlines share a 1/4 s grid: goaway idle never comes before
    2.5 x heartbeat_s without a frame, and at most 0.25 s after it."""
    w = World(heartbeat_s=30)
    w.clock.advance(0.1)
    _proto, tr = w.device()  # last frame at T0 + 0.1: idle at T0 + 75.1
    w.clock.advance(10.15)  # the handshake timer's grid point: it re-arms
    w.clock.advance(64.85)
    assert w.clock.seconds() >= T0 + 75.1
    assert tr.value() == b"" and not tr.disconnecting
    w.clock.advance(0.15)
    assert out(tr) == [{"type": "goaway", "reason": "idle", "reconnect_after_ms": 0}]
    assert w.clock.seconds() - (T0 + 75.1) <= 0.25


def test_rate_limited_storm() -> None:
    """An ack storm: error rate_limited, connection closed, session down."""
    w = World()
    proto, tr = w.device()
    proto.dataReceived(
        b"".join(wire({"type": "ack", "id": str(i)}) for i in range(500))
    )
    assert [f["code"] for f in out(tr)] == ["rate_limited"]
    assert tr.disconnecting
    assert w.listener.calls[-1] == ("down", DEVICE, "rate_limited")
    proto.dataReceived(wire({"type": "ping"}))
    assert tr.value() == b""


def test_call_event_reaches_listener() -> None:
    """call_event is passed to listeners with the device id."""
    w = World()
    proto, _ = w.device()
    proto.dataReceived(
        wire({"type": "call_event", "call_id": "c1", "event": "answered"})
    )
    assert w.listener.calls[-1] == ("call_event", DEVICE, "c1", "answered")


# Delivery ----------------------------------------------------------------------


def test_deliver_acked() -> None:
    """deliver writes the frame and fires delivered when the ack arrives."""
    w = World()
    proto, tr = w.device()
    d = w.hub.deliver(DEVICE, CALL)
    (frame,) = out(tr)
    assert frame["type"] == "call" and frame["call_id"] == "c1"
    assert not_fired(d)
    proto.dataReceived(wire({"type": "ack", "id": frame["id"]}))
    assert result_of(d) == DeliveryResult(
        delivered=True, session_id=proto.session_id, frame_id=frame["id"]
    )


def test_deliver_ack_timeout() -> None:
    """No ack within the timeout: not delivered (ack_timeout); late ack ignored."""
    w = World(ack_timeout_s=3)
    proto, tr = w.device()
    d = w.hub.deliver(DEVICE, CallCancelFrame(call_id="c1", reason="remote_ended"))
    (frame,) = out(tr)
    w.clock.advance(2.9)
    assert not_fired(d)
    w.clock.advance(0.1)
    result = result_of(d)
    assert (result.delivered, result.reason) == (False, "ack_timeout")
    proto.dataReceived(wire({"type": "ack", "id": frame["id"]}))
    assert w.hub.is_online(DEVICE)


def test_deliver_custom_ack_timeout() -> None:
    """The caller's ack_timeout overrides the configured one."""
    w = World(ack_timeout_s=3)
    w.device()
    d = w.hub.deliver(DEVICE, CALL, ack_timeout=1)
    w.clock.advance(1)
    assert result_of(d).reason == "ack_timeout"


def test_deliver_no_session() -> None:
    """No session for the device: not delivered (no_session) at once."""
    w = World()
    assert result_of(w.hub.deliver("nobody", CALL)) == DeliveryResult(
        delivered=False, reason="no_session"
    )


def test_deliver_session_died() -> None:
    """Connection lost with a frame unacked: not delivered (session_died)."""
    w = World()
    proto, _ = w.device()
    d = w.hub.deliver(DEVICE, CALL)
    proto.connectionLost()
    assert result_of(d).reason == "session_died"
    assert result_of(w.hub.deliver(DEVICE, CALL)).reason == "no_session"


def test_deliver_too_large() -> None:
    """A frame over max_frame is not sent: frame_too_large, session unharmed."""
    w = World(max_frame=2048)
    _, tr = w.device()
    msg = MessageFrame(
        message_id="m", sender=Party(handle="x"), body="y" * 3000, sent_at=T0
    )
    assert result_of(w.hub.deliver(DEVICE, msg)).reason == "frame_too_large"
    assert tr.value() == b""
    assert w.hub.is_online(DEVICE)


def test_listener_can_deliver_on_session_up() -> None:
    """A listener replaying calls on session up gets them on the wire after welcome."""
    w = World()
    results: list[Any] = []

    class Replayer(RecordingListener):
        def on_session_up(self, device_id: str, info: Any) -> None:
            results.append(w.hub.deliver(device_id, CALL))

    w.hub.add_listener(Replayer())
    proto, tr = w.connect()
    proto.dataReceived(wire(hello()))
    assert [f["type"] for f in out(tr)] == ["welcome", "call"]
    assert len(results) == 1


def test_listener_failure_is_contained() -> None:
    """A listener that raises does not break the session or other listeners."""
    w = World()

    class Broken(RecordingListener):
        def on_session_up(self, device_id: str, info: Any) -> None:
            raise RuntimeError("bug")

    w.hub.remove_listener(w.listener)
    w.hub.add_listener(Broken())
    w.hub.add_listener(w.listener)
    w.device()
    assert w.listener.calls == [("up", DEVICE)]
    assert w.hub.is_online(DEVICE)


# Replacement --------------------------------------------------------------------


def test_second_session_replaces_first() -> None:
    """A new session for the device: goaway replaced on the old, which closes;
    its unacked frames are not delivered (replaced)."""
    w = World()
    old, old_tr = w.device()
    d = w.hub.deliver(DEVICE, CALL)
    old_tr.clear()
    new, _ = w.device()
    assert out(old_tr) == [
        {"type": "goaway", "reason": "replaced", "reconnect_after_ms": 0}
    ]
    assert old_tr.disconnecting
    assert result_of(d).reason == "replaced"
    assert w.listener.calls == [
        ("up", DEVICE),
        ("down", DEVICE, "replaced"),
        ("up", DEVICE),
    ]
    old.connectionLost()
    assert w.hub.is_online(DEVICE)
    assert w.hub.session_info(DEVICE).session_id == new.session_id  # type: ignore[union-attr]
    assert w.listener.calls[-1] == ("up", DEVICE)


def test_acks_on_replaced_session_ignored() -> None:
    """Late input on the replaced connection does not affect the new session."""
    w = World()
    old, _ = w.device()
    w.device()
    d = w.hub.deliver(DEVICE, CALL)
    old.dataReceived(wire({"type": "ack", "id": "id-9"}))
    assert not_fired(d)


# Messages -------------------------------------------------------------------------


def stored(message_id: str, sent_at: float, ttl: float = 3600) -> StoredMessage:
    return StoredMessage(
        message_id=message_id,
        sender=Party(handle="+4930123", display_name="Alice"),
        body=f"text {message_id}",
        sent_at=sent_at,
        expires_at=sent_at + ttl,
    )


def test_pending_messages_replayed_oldest_first() -> None:
    """On session up, stored unexpired messages are sent, oldest first."""
    w = World()
    w.directory.store_message(DEVICE, stored("m2", T0 - 10))
    w.directory.store_message(DEVICE, stored("m1", T0 - 20))
    w.directory.store_message(DEVICE, stored("old", T0 - 7200))
    proto, tr = w.connect()
    proto.dataReceived(wire(hello()))
    frames = out(tr)
    assert [f["type"] for f in frames] == ["welcome", "message", "message"]
    assert [f["message_id"] for f in frames[1:]] == ["m1", "m2"]
    assert frames[1]["id"] != frames[2]["id"]


def test_acked_message_removed_unacked_resent_next_session() -> None:
    """An acked message is dropped; an unacked one is not resent on the same
    session, but is on the next."""
    w = World()
    w.directory.store_message(DEVICE, stored("m1", T0 - 20))
    w.directory.store_message(DEVICE, stored("m2", T0 - 10))
    proto, tr = w.connect()
    proto.dataReceived(wire(hello()))
    _, m1, _m2 = out(tr)
    proto.dataReceived(wire({"type": "ack", "id": m1["id"]}))
    assert [m.message_id for m in w.directory.pending_messages(DEVICE, T0)] == ["m2"]
    w.clock.advance(3)  # m2 times out
    again = w.hub.deliver(DEVICE, stored("m2", T0 - 10).to_frame())
    assert result_of(again).reason == "ack_timeout"
    assert tr.value() == b""
    proto2, tr2 = w.connect()
    proto2.dataReceived(wire(hello(now=w.clock.seconds())))
    assert [f.get("message_id") for f in out(tr2)] == [None, "m2"]


def test_message_deliver_joins_replay() -> None:
    """deliver() of a message already replayed on this session waits for that ack."""
    w = World()
    w.directory.store_message(DEVICE, stored("m1", T0))
    proto, tr = w.connect()
    proto.dataReceived(wire(hello()))
    _, m1 = out(tr)
    d = w.hub.deliver(DEVICE, stored("m1", T0).to_frame())
    assert tr.value() == b""
    proto.dataReceived(wire({"type": "ack", "id": m1["id"]}))
    assert result_of(d).delivered
    assert result_of(w.hub.deliver(DEVICE, stored("m1", T0).to_frame())).delivered
    assert w.directory.pending_messages(DEVICE, T0) == []


# Send buffer cap ------------------------------------------------------------------


def test_client_that_never_reads_is_dropped() -> None:
    """Once the transport pauses us, more than send_buffer_limit bytes queued
    drops the session; its frames count as not delivered."""
    w = World(send_buffer_limit=4096)
    proto, tr = w.device()
    assert tr.producer is proto and tr.streaming
    proto.pauseProducing()
    results = []
    for _ in range(40):
        results.append(w.hub.deliver(DEVICE, CALL))
        if tr.aborted:
            break
    assert tr.aborted
    assert not w.hub.is_online(DEVICE)
    assert all(not result_of(d).delivered for d in results)
    assert w.listener.calls[-1] == ("down", DEVICE, "connection_lost")


def test_resume_resets_the_count() -> None:
    """A client that reads (transport resumes us) is never dropped."""
    w = World(send_buffer_limit=4096)
    proto, tr = w.device()
    for _ in range(100):
        proto.pauseProducing()
        w.hub.deliver(DEVICE, CALL)
        proto.resumeProducing()
    assert not tr.aborted
    assert w.hub.is_online(DEVICE)


# Shutdown -------------------------------------------------------------------------


def test_shutdown_spreads_reconnects() -> None:
    """shutdown: goaway shutdown to every session, reconnect_after_ms spread over
    the window; fires once all connections are gone."""
    w = World()
    conns = [w.device(f"dev-{i}") for i in range(4)]
    d = w.hub.shutdown(10)
    delays = []
    for _, tr in conns:
        (goaway,) = out(tr)
        assert goaway["type"] == "goaway" and goaway["reason"] == "shutdown"
        delays.append(goaway["reconnect_after_ms"])
        assert tr.disconnecting
    assert delays == [0, 2500, 5000, 7500]
    assert not_fired(d)
    for proto, _ in conns:
        proto.connectionLost()
    assert result_of(d) is None
    assert w.hub.online_count == 0


def test_shutdown_stragglers_aborted() -> None:
    """A connection that does not close after goaway is aborted after close_timeout_s."""
    w = World(close_timeout_s=5)
    _, tr = w.device()
    w.hub.shutdown(10)
    w.clock.advance(5)
    assert tr.aborted


def test_session_during_shutdown_gets_goaway() -> None:
    """A device that says hello during shutdown is sent goaway shutdown at once."""
    w = World()
    w.hub.shutdown(10)
    proto, tr = w.connect()
    proto.dataReceived(wire(hello()))
    frames = out(tr)
    assert [f["type"] for f in frames] == ["welcome", "goaway"]
    assert frames[1]["reason"] == "shutdown"
    assert not w.hub.is_online(DEVICE)


@pytest.mark.parametrize("n", [1, 3])
def test_shutdown_with_few_sessions(n: int) -> None:
    """Spread is even for any session count, starting at 0 and below the window."""
    w = World()
    conns = [w.device(f"d{i}") for i in range(n)]
    w.hub.shutdown(3)
    delays = [out(tr)[0]["reconnect_after_ms"] for _, tr in conns]
    assert delays == [3000 * i // n for i in range(n)]


def test_core_bug_becomes_internal_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception inside the core ends only that session, with error internal."""
    from twisted.logger import capturedLogs

    from gateway.localpush.session import DeviceSession

    w = World()
    proto, tr = w.device()
    _, other_tr = w.device("other-device")

    def explode(self: DeviceSession, data: bytes, now: float) -> list[Any]:
        raise RuntimeError("bug")

    monkeypatch.setattr(DeviceSession, "receive_data", explode)
    with capturedLogs() as events:
        proto.dataReceived(wire({"type": "ping"}))
    assert any(e.get("log_failure") is not None for e in events)
    assert [f["code"] for f in out(tr)] == ["internal"]
    assert tr.disconnecting
    assert not w.hub.is_online(DEVICE)
    assert w.hub.is_online("other-device") and not other_tr.disconnecting


class _FrameRecorder:
    """A ``FrameObserver`` that records, and raises when told to."""

    def __init__(self, raises: bool = False) -> None:
        self.raises = raises
        self.heard: list[tuple[str, str, DeliveryResult, float]] = []

    def on_frame_result(
        self, device_id: str, frame: str, result: DeliveryResult, seconds: float
    ) -> None:
        self.heard.append((device_id, frame, result, seconds))
        if self.raises:
            raise RuntimeError("observer bug")


def test_frame_observers_hear_each_delivery_and_cannot_break_it() -> None:
    """Observers hear each deliver's result (acked after its wait, no_session
    at once) before the caller; one that raises is logged, and the caller and
    the next observer still get the result."""
    w = World()
    broken, recorder = _FrameRecorder(raises=True), _FrameRecorder()
    w.hub.add_frame_observer(broken)
    w.hub.add_frame_observer(recorder)
    proto, tr = w.device()
    with capturedLogs() as events:
        d = w.hub.deliver(DEVICE, CALL)
        (frame,) = out(tr)
        w.clock.advance(0.25)
        proto.dataReceived(wire({"type": "ack", "id": frame["id"]}))
        missing = w.hub.deliver(
            "nobody", CallCancelFrame(call_id="c1", reason="remote_ended")
        )
    acked = result_of(d)
    assert acked.delivered
    assert result_of(missing) == DeliveryResult(delivered=False, reason=NO_SESSION)
    assert recorder.heard == [
        (DEVICE, "call", acked, 0.25),
        ("nobody", "call_cancel", result_of(missing), 0.0),
    ]
    assert len(broken.heard) == 2
    failures = [e for e in events if "log_failure" in e]
    assert [e["what"] for e in failures] == ["on_frame_result"] * 2
