"""ClientSession: the simulator's sans-IO client side of LPP/1 (no sockets)."""

from __future__ import annotations

import random

import pytest
from sim_helpers import CREDS, call, open_session, sent, welcome, wire

from gateway.simulator import (
    AckDropped,
    Behaviour,
    CallEventSent,
    ClientSession,
    FrameReceived,
    GoawayReceived,
    HelloExtras,
    ProtocolFault,
    ServerError,
    Welcomed,
)


def test_hello_first_with_extras() -> None:
    """start() queues one hello with the token and the optional members set."""
    session = ClientSession(
        CREDS, hello=HelloExtras(voip_token="ab" * 32, topic="com.example.app")
    )
    session.start()
    session.start()  # idempotent
    assert sent(session.data_to_send()) == [
        {
            "type": "hello",
            "v": 1,
            "device_id": "sim-1",
            "token": "header.claims.sig",
            "voip_token": "ab" * 32,
            "topic": "com.example.app",
        }
    ]
    assert session.next_deadline() is None  # no ping before welcome


def test_welcome_opens_and_schedules_pings() -> None:
    """Pings go every heartbeat_s from welcome, with fresh ids."""
    session = ClientSession(CREDS)
    session.start()
    session.data_to_send()
    events = session.receive_data(welcome(heartbeat_s=30), 100.0)
    assert isinstance(events[0], FrameReceived)
    assert events[1] == Welcomed(session_id="s-1", heartbeat_s=30.0)
    assert session.is_open
    assert session.next_deadline() == 130.0
    assert session.tick(129.9) == [] and session.data_to_send() == b""
    session.tick(130.0)
    assert sent(session.data_to_send()) == [{"type": "ping", "id": "p-1"}]
    assert session.next_deadline() == 160.0
    session.tick(160.0)
    assert sent(session.data_to_send()) == [{"type": "ping", "id": "p-2"}]


def test_stalled_clock_sends_one_ping() -> None:
    """After a stall only one ping goes out and the schedule moves on."""
    session = open_session(now=0.0)
    session.tick(95.0)
    assert sent(session.data_to_send()) == [{"type": "ping", "id": "p-1"}]
    assert session.next_deadline() == 120.0


def test_no_ping_behaviour() -> None:
    """Behaviour(ping=False) never pings (to test the server's idle timeout)."""
    session = open_session(behaviour=Behaviour(ping=False))
    assert session.next_deadline() is None


def test_call_acked_at_once() -> None:
    """A call is acked in the same step it arrives."""
    session = open_session()
    events = session.receive_data(call("f-9"), 1.0)
    assert [type(e) for e in events] == [FrameReceived]
    assert sent(session.data_to_send()) == [{"type": "ack", "id": "f-9"}]


@pytest.mark.parametrize("frame_type", ["call_cancel", "message"])
def test_other_frames_acked(frame_type: str) -> None:
    """call_cancel and message frames are acked too; pong is not."""
    session = open_session()
    session.receive_data(wire({"type": frame_type, "id": "x"}), 1.0)
    session.receive_data(wire({"type": "pong", "id": "p-1"}), 1.0)
    assert sent(session.data_to_send()) == [{"type": "ack", "id": "x"}]


def test_ack_delay() -> None:
    """With ack_delay_s the ack goes out at the tick due then, not before."""
    session = open_session(behaviour=Behaviour(ack_delay_s=0.25))
    session.receive_data(call("f-1"), 10.0)
    assert session.data_to_send() == b""
    assert session.next_deadline() == 10.25
    session.tick(10.2)
    assert session.data_to_send() == b""
    session.tick(10.25)
    assert sent(session.data_to_send()) == [{"type": "ack", "id": "f-1"}]
    assert session.next_deadline() == 30.0  # only the ping is left


def test_delayed_acks_keep_order() -> None:
    """Delayed acks leave in the order their frames came."""
    session = open_session(behaviour=Behaviour(ack_delay_s=0.1))
    session.receive_data(call("a") + call("b", call_id="c-2"), 1.0)
    session.tick(1.1)
    assert [f["id"] for f in sent(session.data_to_send())] == ["a", "b"]


def test_drop_all_acks() -> None:
    """drop_acks=1 acks nothing and reports each drop."""
    session = open_session(behaviour=Behaviour(drop_acks=1.0))
    events = session.receive_data(call("f-1"), 1.0)
    assert AckDropped(frame_id="f-1") in events
    assert session.data_to_send() == b""


def test_drop_share_is_about_right() -> None:
    """drop_acks=0.1 drops about a tenth, reproducibly with a seeded rng."""
    session = open_session(behaviour=Behaviour(drop_acks=0.1), rng=random.Random(7))
    dropped = 0
    for i in range(2000):
        events = session.receive_data(wire({"type": "message", "id": f"m{i}"}), 1.0)
        dropped += sum(isinstance(e, AckDropped) for e in events)
    acks = sent(session.data_to_send())
    assert 150 <= dropped <= 250
    assert len(acks) + dropped == 2000


def test_call_event_reply() -> None:
    """on_call sends a call_event for the call's call_id after the ack."""
    session = open_session(behaviour=Behaviour(on_call="declined"))
    events = session.receive_data(call("f-1", call_id="c-7"), 1.0)
    assert CallEventSent(call_id="c-7", event="declined") in events
    assert sent(session.data_to_send()) == [
        {"type": "ack", "id": "f-1"},
        {"type": "call_event", "call_id": "c-7", "event": "declined"},
    ]


def test_call_event_delay() -> None:
    """A call_event delay holds the reply back until its tick; the ack is not held."""
    session = open_session(
        behaviour=Behaviour(on_call="answered", call_event_delay_s=2.0)
    )
    session.receive_data(call("f-1", call_id="c-1"), 5.0)
    assert sent(session.data_to_send()) == [{"type": "ack", "id": "f-1"}]
    assert session.next_deadline() == 7.0
    events = session.tick(7.0)
    assert events == [CallEventSent(call_id="c-1", event="answered")]
    assert sent(session.data_to_send()) == [
        {"type": "call_event", "call_id": "c-1", "event": "answered"}
    ]


def test_no_call_event_for_cancel() -> None:
    """call_cancel gets only an ack, even with on_call set."""
    session = open_session(behaviour=Behaviour(on_call="ringing"))
    session.receive_data(wire({"type": "call_cancel", "id": "x", "call_id": "c"}), 1)
    assert sent(session.data_to_send()) == [{"type": "ack", "id": "x"}]


def test_server_ping_answered() -> None:
    """A server ping gets a pong with the same id."""
    session = open_session()
    session.receive_data(wire({"type": "ping", "id": "srv-1"}), 1.0)
    assert sent(session.data_to_send()) == [{"type": "pong", "id": "srv-1"}]


def test_goaway_sets_reconnect_delay() -> None:
    """goaway closes the session; reconnect_after_ms becomes the reconnect delay."""
    session = open_session(behaviour=Behaviour(ack_delay_s=1.0))
    session.receive_data(call("f-1"), 1.0)
    events = session.receive_data(
        wire({"type": "goaway", "reason": "shutdown", "reconnect_after_ms": 1500})
        + call("f-2"),
        1.5,
    )
    assert GoawayReceived(reason="shutdown", reconnect_after_ms=1500) in events
    assert session.should_close and not session.is_open
    assert session.reconnect_after_s == 1.5
    assert session.tick(5.0) == [] and session.data_to_send() == b""
    assert session.next_deadline() is None


def test_fatal_error_closes_and_may_give_up() -> None:
    """unauthorized closes and stops reconnects; unknown_type keeps the session."""
    session = open_session()
    events = session.receive_data(
        wire({"type": "error", "code": "unknown_type", "message": "?"}), 1.0
    )
    assert ServerError(code="unknown_type", message="?", fatal=False) in events
    assert session.is_open
    session.receive_data(wire({"type": "error", "code": "unauthorized"}), 1.0)
    assert session.should_close and session.give_up
    assert session.reconnect_after_s is None


def test_idle_error_does_not_give_up() -> None:
    """rate_limited is fatal for the session but worth a reconnect."""
    session = open_session()
    session.receive_data(wire({"type": "error", "code": "rate_limited"}), 1.0)
    assert session.should_close and not session.give_up


def test_bad_framing_is_a_fault() -> None:
    """Bytes that are not LPP/1 end the session with ProtocolFault."""
    session = open_session()
    events = session.receive_data(b"\x00\x00\x00\x02{x", 1.0)
    assert events == [
        ProtocolFault(code="bad_frame", message="frame is not UTF-8 JSON")
    ]
    assert session.should_close


def test_split_reads() -> None:
    """A frame split over reads is handled when complete."""
    session = ClientSession(CREDS)
    session.start()
    data = welcome()
    assert session.receive_data(data[:3], 0.0) == []
    assert session.receive_data(data[3:10], 0.0) == []
    assert any(isinstance(e, Welcomed) for e in session.receive_data(data[10:], 0.0))


def test_close_says_bye_only_when_open() -> None:
    """close() sends bye on an open session; before welcome it just ends."""
    session = open_session()
    session.close()
    assert sent(session.data_to_send()) == [{"type": "bye"}]
    early = ClientSession(CREDS)
    early.start()
    early.data_to_send()
    early.close()
    assert early.data_to_send() == b"" and early.should_close


def test_behaviour_validation() -> None:
    """Out-of-range knobs are refused."""
    with pytest.raises(ValueError, match="drop_acks"):
        Behaviour(drop_acks=1.5)
    with pytest.raises(ValueError, match="ack_delay_s"):
        Behaviour(ack_delay_s=-1)
    with pytest.raises(ValueError, match="on_call"):
        Behaviour(on_call="maybe")


def test_token_not_in_repr() -> None:
    """The device token never shows in a repr (and so not in logs)."""
    assert "header.claims.sig" not in repr(CREDS)


@pytest.mark.parametrize(
    "pong",
    [
        {"type": "pong", "id": "p-1"},
        {"id": "p-7", "type": "pong"},
        {"type": "pong", "id": "x" * 257},
        {"type": "pong"},
        {"type": "pong", "id": "é"},
    ],
)
def test_pong_fast_path_matches_full_decode(pong: dict[str, object]) -> None:
    """A pong fed whole (fast path when simple) yields the same events as the
    same pong fed in two pieces (always the full decode)."""
    fast, slow = open_session(), open_session()
    data = wire(pong)
    fast_events = fast.receive_data(data, 10.0)
    slow_events = slow.receive_data(data[:3], 10.0) + slow.receive_data(data[3:], 10.0)
    assert fast_events == slow_events
    assert [type(e) for e in fast_events] == [FrameReceived]
    assert fast.data_to_send() == slow.data_to_send() == b""


def test_ping_bytes_as_encode_frame() -> None:
    """The pre-built ping is what encode_frame writes for it."""
    from gateway.localpush.codec import encode_frame

    session = open_session()
    session.tick(30.0)  # heartbeat_s of welcome()
    assert session.data_to_send() == encode_frame({"type": "ping", "id": "p-1"}, 64)
