"""LPP/1 session core: every rule of localpush.md, bytes in, events/bytes out."""

from __future__ import annotations

import struct
from typing import Any

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lp_helpers import (
    DEVICE,
    SECRET,
    T0,
    counter_ids,
    frames_of,
    hello,
    token,
    wire,
)

from gateway.localpush.codec import LocalProtocolError
from gateway.localpush.frames import (
    CallCancelFrame,
    CallFrame,
    MessageFrame,
    Party,
)
from gateway.localpush.session import (
    Acked,
    AckTimedOut,
    CallEventReceived,
    DeviceSession,
    HelloAccepted,
    SessionClosed,
    SessionSettings,
    State,
)

CALL = CallFrame(
    call_id="6d3e2a1c-0000-4000-8000-000000000001",
    caller=Party(handle="+4930123", display_name="Alice"),
    video=False,
    to="sip:bob@example.com",
    expires_at=T0 + 60,
)


def new_session(**settings: Any) -> DeviceSession:
    return DeviceSession(
        SessionSettings(**settings), SECRET, T0, id_factory=counter_ids()
    )


def open_session(**settings: Any) -> DeviceSession:
    """A session past its handshake, output drained."""
    s = new_session(**settings)
    events = s.receive_data(wire(hello()), T0)
    assert isinstance(events[0], HelloAccepted)
    s.data_to_send()
    return s


def only_frame(s: DeviceSession) -> dict[str, Any]:
    (frame,) = frames_of(s.data_to_send())
    return frame


def assert_error(s: DeviceSession, code: str, *, closes: bool = True) -> dict[str, Any]:
    frame = only_frame(s)
    assert frame["type"] == "error"
    assert frame["code"] == code
    assert isinstance(frame["message"], str)
    assert s.should_close is closes
    return frame


# Handshake -------------------------------------------------------------------


def test_hello_gets_welcome() -> None:
    """A valid hello is answered by welcome with all five members."""
    s = new_session()
    events = s.receive_data(wire(hello()), T0 + 0.25)
    welcome = only_frame(s)
    assert welcome == {
        "type": "welcome",
        "v": 1,
        "session_id": "id-1",
        "heartbeat_s": 30,
        "max_frame": 16384,
        "server_time": "2026-11-23T10:00:00.250Z",
    }
    assert s.state is State.OPEN
    assert s.session_id == "id-1"
    assert s.device_id == DEVICE
    (accepted,) = events
    assert isinstance(accepted, HelloAccepted)
    assert accepted.session_id == "id-1"
    assert accepted.hello.device_id == DEVICE
    assert accepted.hello.voip_token == "ab" * 32
    assert accepted.hello.alert_token == "cd" * 32
    assert accepted.hello.topic == "com.example.app"
    assert accepted.hello.apns_env == "production"
    assert accepted.hello.locale == "de-DE"
    assert accepted.hello.app_version == "2.4.1"
    assert accepted.claims.aors == ("sip:bob@example.com",)


def test_welcome_uses_configured_values() -> None:
    """heartbeat_s and max_frame in welcome come from the settings."""
    s = new_session(heartbeat_s=10, max_frame=4096)
    s.receive_data(wire(hello()), T0)
    welcome = only_frame(s)
    assert (welcome["heartbeat_s"], welcome["max_frame"]) == (10, 4096)


def test_hello_optional_members_absent_or_null() -> None:
    """Only v, device_id and token are required; null counts as absent."""
    s = new_session()
    obj = hello(voip_token=None, alert_token=None, topic=None, locale=None)
    obj["apns_env"] = None
    obj["app_version"] = None
    (accepted,) = s.receive_data(wire(obj), T0)
    assert isinstance(accepted, HelloAccepted)
    assert accepted.hello.voip_token is None
    assert accepted.hello.apns_env is None


def test_hello_unknown_members_ignored() -> None:
    """Unknown hello members are ignored (forward compatibility)."""
    s = new_session()
    (accepted,) = s.receive_data(wire(hello(capabilities=["video"])), T0)
    assert isinstance(accepted, HelloAccepted)


@pytest.mark.parametrize(
    ("members", "field"),
    [
        ({"v": None}, "v"),
        ({"v": "1"}, "v"),
        ({"v": True}, "v"),
        ({"device_id": None}, "device_id"),
        ({"device_id": ""}, "device_id"),
        ({"device_id": "bob/iphone"}, "device_id"),
        ({"device_id": "x" * 129}, "device_id"),
        ({"device_id": 42}, "device_id"),
        ({"token": None}, "token"),
        ({"token": ""}, "token"),
        ({"token": 1}, "token"),
        ({"voip_token": "xyz"}, "voip_token"),
        ({"voip_token": "abc"}, "voip_token"),
        ({"alert_token": 12}, "alert_token"),
        ({"topic": "com.example app"}, "topic"),
        ({"topic": ""}, "topic"),
        ({"apns_env": "development"}, "apns_env"),
        ({"locale": 5}, "locale"),
        ({"app_version": "1" * 65}, "app_version"),
        ({"app_version": "1.0\n"}, "app_version"),
    ],
)
def test_bad_hello(members: dict[str, Any], field: str) -> None:
    """A missing or invalid hello member gets bad_hello naming it, then close."""
    s = new_session()
    obj = hello()
    for name, value in members.items():
        if value is None:
            obj.pop(name, None)
        else:
            obj[name] = value
    events = s.receive_data(wire(obj), T0)
    frame = assert_error(s, "bad_hello")
    assert frame["field"] == field
    assert events == [SessionClosed(reason="error", code="bad_hello")]


def test_unsupported_version() -> None:
    """Another v gets unsupported_version with supported [1], then close."""
    s = new_session()
    s.receive_data(wire(hello(v=2)), T0)
    frame = assert_error(s, "unsupported_version")
    assert frame["supported"] == [1]


@pytest.mark.parametrize(
    "bad_token",
    [
        pytest.param(
            jwt.encode(
                {"sub": DEVICE, "aor": "sip:b@x", "exp": T0 + 60},
                b"another-secret-0123456789abcdef!",
            ),
            id="bad-signature",
        ),
        pytest.param(
            jwt.encode(
                {"sub": DEVICE, "aor": "sip:b@x", "exp": T0 + 60},
                SECRET,
                algorithm="HS512",
            ),
            id="other-algorithm",
        ),
        pytest.param(token(now=T0 - 86400 - 31), id="expired"),
        pytest.param(token(now=T0 + 3600), id="not-yet-valid"),
        pytest.param(token("someone-else"), id="sub-mismatch"),
        pytest.param(
            jwt.encode({"sub": DEVICE, "exp": T0 + 60}, SECRET), id="missing-aor"
        ),
        pytest.param("not.a.jwt", id="garbage"),
    ],
)
def test_unauthorized(bad_token: str) -> None:
    """A token that does not authorise the device: unauthorized, then close."""
    s = new_session()
    events = s.receive_data(wire(hello(token=bad_token)), T0)
    out = s.data_to_send()
    assert bad_token.encode() not in out
    (frame,) = frames_of(out)
    assert (frame["type"], frame["code"]) == ("error", "unauthorized")
    assert events == [SessionClosed(reason="error", code="unauthorized")]


@pytest.mark.parametrize("frame_type", ["ping", "ack", "bye", "call_event", "what"])
def test_other_frame_first_needs_handshake(frame_type: str) -> None:
    """A well-formed frame of another type first: handshake_required, close."""
    s = new_session()
    s.receive_data(wire({"type": frame_type, "id": "1"}), T0)
    assert_error(s, "handshake_required")


def test_malformed_first_frame() -> None:
    """A malformed first frame gets bad_frame, then close."""
    s = new_session()
    body = b'{"type":'
    s.receive_data(struct.pack(">I", len(body)) + body, T0)
    assert_error(s, "bad_frame")


def test_garbage_before_hello() -> None:
    """Bytes that are not LPP at all (here TLS/HTTP) are refused and closed."""
    s = new_session()
    s.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", T0)
    assert_error(s, "frame_too_large")


def test_hello_split_into_single_bytes() -> None:
    """A hello arriving one byte per write still gets its welcome."""
    s = new_session()
    data = wire(hello())
    events = []
    for i in range(len(data)):
        events.extend(s.receive_data(data[i : i + 1], T0))
    assert [type(e) for e in events] == [HelloAccepted]
    assert only_frame(s)["type"] == "welcome"


def test_handshake_timeout() -> None:
    """No hello within handshake_timeout: error handshake_timeout, close."""
    s = new_session()
    assert s.next_deadline() == T0 + 10
    assert s.tick(T0 + 9.99) == []
    assert s.data_to_send() == b""
    events = s.tick(T0 + 10)
    assert_error(s, "handshake_timeout")
    assert events == [SessionClosed(reason="error", code="handshake_timeout")]
    assert s.next_deadline() is None


def test_partial_hello_does_not_extend_handshake() -> None:
    """Trickling bytes do not reset the handshake timer."""
    s = new_session()
    s.receive_data(wire(hello())[:10], T0 + 9)
    s.tick(T0 + 10)
    assert_error(s, "handshake_timeout")


# Open session ------------------------------------------------------------------


def test_second_hello_is_unexpected_and_stays_open() -> None:
    """A second hello: unexpected_frame, the session stays open."""
    s = open_session()
    assert s.receive_data(wire(hello()), T0 + 1) == []
    assert_error(s, "unexpected_frame", closes=False)
    assert s.state is State.OPEN


@pytest.mark.parametrize("frame_type", ["welcome", "call", "message", "goaway"])
def test_server_only_type_is_unexpected(frame_type: str) -> None:
    """A frame type only the server sends is unexpected_frame, session open."""
    s = open_session()
    s.receive_data(wire({"type": frame_type}), T0 + 1)
    assert_error(s, "unexpected_frame", closes=False)


def test_unknown_type_stays_open() -> None:
    """An unknown type gets unknown_type and the session stays open."""
    s = open_session()
    s.receive_data(wire({"type": "telemetry", "x": 1}), T0 + 1)
    assert_error(s, "unknown_type", closes=False)
    s.receive_data(wire({"type": "ping", "id": "p"}), T0 + 2)
    assert only_frame(s) == {"type": "pong", "id": "p"}


def test_ping_gets_pong() -> None:
    """ping is answered by pong with the same id (not acked)."""
    s = open_session()
    assert s.receive_data(wire({"type": "ping", "id": "abc"}), T0 + 1) == []
    assert only_frame(s) == {"type": "pong", "id": "abc"}


def test_ping_without_id() -> None:
    """A ping without a string id still gets a pong, without id."""
    s = open_session()
    s.receive_data(wire({"type": "ping", "id": 7}), T0 + 1)
    assert only_frame(s) == {"type": "pong"}


def test_pong_is_accepted_silently() -> None:
    """A pong (answer to a server ping) produces no output and no event."""
    s = open_session()
    ping_id = s.send_ping()
    assert only_frame(s) == {"type": "ping", "id": ping_id}
    assert s.receive_data(wire({"type": "pong", "id": ping_id}), T0 + 1) == []
    assert s.data_to_send() == b""


def test_call_frame_and_ack() -> None:
    """A call carries a frame id; the matching ack yields Acked once."""
    s = open_session()
    frame_id = s.send(CALL, T0 + 1)
    frame = only_frame(s)
    assert frame == {
        "type": "call",
        "id": frame_id,
        "call_id": CALL.call_id,
        "caller": {"handle": "+4930123", "display_name": "Alice"},
        "video": False,
        "to": "sip:bob@example.com",
        "expires_at": "2026-11-23T10:01:00.000Z",
    }
    assert s.unacked == (frame_id,)
    events = s.receive_data(wire({"type": "ack", "id": frame_id}), T0 + 1.5)
    assert events == [Acked(frame_id=frame_id)]
    assert s.unacked == ()
    assert s.receive_data(wire({"type": "ack", "id": frame_id}), T0 + 1.6) == []


def test_call_headers_and_null_display_name() -> None:
    """headers appear only when the call has some; display_name may be null."""
    s = open_session()
    call = CallFrame(
        call_id="c",
        caller=Party(handle="+1"),
        video=True,
        to="sip:bob@example.com",
        expires_at=T0,
        headers=(("X-Customer-Id", "42"),),
    )
    s.send(call, T0)
    frame = only_frame(s)
    assert frame["headers"] == {"X-Customer-Id": "42"}
    assert frame["caller"] == {"handle": "+1", "display_name": None}


def test_call_cancel_and_message_frames() -> None:
    """call_cancel and message frames have the documented members."""
    s = open_session()
    cancel_id = s.send(CallCancelFrame(call_id="c", reason="answered_elsewhere"), T0)
    msg_id = s.send(
        MessageFrame(
            message_id="m1",
            sender=Party(handle="+49", display_name=None),
            body="hi",
            sent_at=T0,
        ),
        T0,
    )
    cancel, msg = frames_of(s.data_to_send())
    assert cancel == {
        "type": "call_cancel",
        "id": cancel_id,
        "call_id": "c",
        "reason": "answered_elsewhere",
    }
    assert msg == {
        "type": "message",
        "id": msg_id,
        "message_id": "m1",
        "from": {"handle": "+49", "display_name": None},
        "body": "hi",
        "sent_at": "2026-11-23T10:00:00.000Z",
    }


def test_cancel_reason_is_checked() -> None:
    """Only the documented call_cancel reasons can be built."""
    with pytest.raises(ValueError):
        CallCancelFrame(call_id="c", reason="bored")


def test_unknown_ack_ignored() -> None:
    """An ack for an id never sent is ignored."""
    s = open_session()
    assert s.receive_data(wire({"type": "ack", "id": "nope"}), T0 + 1) == []
    assert s.data_to_send() == b""
    assert s.state is State.OPEN


def test_ack_without_id_is_bad_frame() -> None:
    """An ack without a string id is malformed: bad_frame, close."""
    s = open_session()
    s.receive_data(wire({"type": "ack"}), T0 + 1)
    assert_error(s, "bad_frame")


def test_ack_timeout_then_late_ack_ignored() -> None:
    """No ack within ack_timeout: AckTimedOut; a later ack is ignored."""
    s = open_session()
    frame_id = s.send(CALL, T0 + 1)
    assert s.next_deadline() == T0 + 4
    assert s.tick(T0 + 3.9) == []
    assert s.tick(T0 + 4) == [AckTimedOut(frame_id=frame_id)]
    assert s.receive_data(wire({"type": "ack", "id": frame_id}), T0 + 5) == []
    assert s.state is State.OPEN


def test_per_frame_ack_timeout() -> None:
    """A caller may give one frame its own ack timeout."""
    s = open_session()
    slow = s.send(CALL, T0, ack_timeout=10)
    fast = s.send(CALL, T0)
    assert s.tick(T0 + 3) == [AckTimedOut(frame_id=fast)]
    assert s.tick(T0 + 10) == [AckTimedOut(frame_id=slow)]


def test_send_before_open_is_local_error() -> None:
    """Sending a call before the handshake is our own misuse."""
    s = new_session()
    with pytest.raises(LocalProtocolError):
        s.send(CALL, T0)


def test_send_too_large_is_local_error() -> None:
    """A frame over max_frame is refused and nothing is queued or tracked."""
    s = open_session(max_frame=1024)
    with pytest.raises(LocalProtocolError):
        s.send(
            MessageFrame(
                message_id="m", sender=Party(handle="x"), body="x" * 1100, sent_at=T0
            ),
            T0,
        )
    assert s.data_to_send() == b""
    assert s.unacked == ()


def test_call_event() -> None:
    """A valid call_event becomes CallEventReceived for the owner."""
    s = open_session()
    events = s.receive_data(
        wire({"type": "call_event", "call_id": "c1", "event": "declined"}), T0 + 1
    )
    assert events == [CallEventReceived(call_id="c1", event="declined")]
    assert s.data_to_send() == b""


@pytest.mark.parametrize(
    "obj",
    [
        {"type": "call_event", "event": "ringing"},
        {"type": "call_event", "call_id": 5, "event": "ringing"},
        {"type": "call_event", "call_id": "", "event": "ringing"},
        {"type": "call_event", "call_id": "c1"},
        {"type": "call_event", "call_id": "c1", "event": "hung_up"},
    ],
)
def test_malformed_call_event(obj: dict[str, Any]) -> None:
    """A call_event with a missing/invalid member is bad_frame (see notes)."""
    s = open_session()
    s.receive_data(wire(obj), T0 + 1)
    assert_error(s, "bad_frame")


def test_bye_closes_without_error() -> None:
    """bye: the server closes without sending anything."""
    s = open_session()
    frame_id = s.send(CALL, T0)
    s.data_to_send()
    events = s.receive_data(wire({"type": "bye"}), T0 + 1)
    assert events == [SessionClosed(reason="bye", unacked=(frame_id,))]
    assert s.data_to_send() == b""
    assert s.should_close


def test_input_after_close_ignored() -> None:
    """Once closed, further bytes produce nothing."""
    s = open_session()
    s.receive_data(wire({"type": "bye"}) + wire({"type": "ping"}), T0 + 1)
    assert s.data_to_send() == b""
    assert s.receive_data(wire({"type": "ping"}), T0 + 2) == []
    assert s.data_to_send() == b""


def test_frames_before_fault_are_processed() -> None:
    """An ack followed by garbage in one write: Acked, then bad_frame."""
    s = open_session()
    frame_id = s.send(CALL, T0)
    s.data_to_send()
    events = s.receive_data(
        wire({"type": "ack", "id": frame_id}) + b"\0\0\0\x02[]", T0 + 1
    )
    assert events == [
        Acked(frame_id=frame_id),
        SessionClosed(reason="error", code="bad_frame"),
    ]
    assert_error(s, "bad_frame")


def test_frame_too_large_when_open() -> None:
    """A frame over max_frame after hello: frame_too_large; unacked reported."""
    s = open_session()
    frame_id = s.send(CALL, T0)
    s.data_to_send()
    events = s.receive_data(struct.pack(">I", 16385), T0 + 1)
    assert events == [
        SessionClosed(reason="error", code="frame_too_large", unacked=(frame_id,))
    ]
    assert_error(s, "frame_too_large")


def test_connection_lost() -> None:
    """Losing the transport ends the session once, listing unacked frames."""
    s = open_session()
    frame_id = s.send(CALL, T0)
    assert s.connection_lost(T0 + 1) == [
        SessionClosed(reason="connection_lost", unacked=(frame_id,))
    ]
    assert s.connection_lost(T0 + 2) == []


def test_eof_is_connection_lost() -> None:
    """receive_data(b"") means EOF."""
    s = open_session()
    assert s.receive_data(b"", T0) == [SessionClosed(reason="connection_lost")]


# Heartbeat ---------------------------------------------------------------------


def test_idle_session_gets_goaway() -> None:
    """No frame for 2.5 x heartbeat_s: goaway idle, then close."""
    s = open_session(heartbeat_s=30)
    assert s.next_deadline() == T0 + 75
    assert s.tick(T0 + 74.9) == []
    events = s.tick(T0 + 75)
    assert events == [SessionClosed(reason="goaway", code="idle")]
    assert only_frame(s) == {
        "type": "goaway",
        "reason": "idle",
        "reconnect_after_ms": 0,
    }


def test_frames_keep_session_alive() -> None:
    """Every received frame restarts the idle clock."""
    s = open_session(heartbeat_s=30)
    for t in range(30, 300, 30):
        s.receive_data(wire({"type": "ping", "id": str(t)}), T0 + t)
        assert s.tick(T0 + t + 74) == []
    assert s.next_deadline() == T0 + 270 + 75


def test_idle_reports_unacked_after_ack_timeouts() -> None:
    """At the idle deadline, expired acks time out first, then the session ends."""
    s = open_session(heartbeat_s=1, ack_timeout_s=10)
    late = s.send(CALL, T0, ack_timeout=2.5)
    events = s.tick(T0 + 2.5)
    assert events == [
        AckTimedOut(frame_id=late),
        SessionClosed(reason="goaway", code="idle"),
    ]


# Goaway ------------------------------------------------------------------------


def test_goaway_shutdown() -> None:
    """goaway carries reason and reconnect_after_ms; the session then closes."""
    s = open_session()
    frame_id = s.send(CALL, T0)
    s.data_to_send()
    events = s.send_goaway("shutdown", 1500)
    assert events == [
        SessionClosed(reason="goaway", code="shutdown", unacked=(frame_id,))
    ]
    assert only_frame(s) == {
        "type": "goaway",
        "reason": "shutdown",
        "reconnect_after_ms": 1500,
    }
    assert s.send_goaway("shutdown", 10) == []
    assert s.data_to_send() == b""


def test_goaway_reason_checked() -> None:
    """Only documented goaway reasons can be sent."""
    with pytest.raises(LocalProtocolError):
        open_session().send_goaway("bored", 0)


def test_send_error_internal() -> None:
    """The owner can end a session with error internal."""
    s = open_session()
    assert s.send_error("internal", "oops") == [
        SessionClosed(reason="error", code="internal")
    ]
    assert_error(s, "internal")


# Rate limit --------------------------------------------------------------------


def test_burst_allowed_then_rate_limited() -> None:
    """50 frames at once pass; the 51st gets rate_limited and the session closes."""
    s = open_session()
    burst = b"".join(wire({"type": "ack", "id": str(i)}) for i in range(50))
    assert s.receive_data(burst, T0 + 1) == []
    events = s.receive_data(wire({"type": "ack", "id": "x"}), T0 + 1)
    assert events == [SessionClosed(reason="error", code="rate_limited")]
    assert_error(s, "rate_limited")


def test_hello_not_counted() -> None:
    """The hello itself does not spend the budget: 50 frames may follow at once."""
    s = new_session()
    data = wire(hello()) + b"".join(wire({"type": "pong"}) for _ in range(50))
    events = s.receive_data(data, T0)
    assert [type(e) for e in events] == [HelloAccepted]
    assert s.state is State.OPEN


def test_ack_storm_closes_and_ignores_the_rest() -> None:
    """A huge ack storm in one write: rate_limited after the burst, rest dropped."""
    s = open_session()
    storm = b"".join(wire({"type": "ack", "id": str(i)}) for i in range(5000))
    events = s.receive_data(storm, T0 + 1)
    assert events == [SessionClosed(reason="error", code="rate_limited")]
    assert_error(s, "rate_limited")


def test_sustained_rate_allowed() -> None:
    """20 frames/s for a long time never trips the limit."""
    s = open_session()
    for i in range(1000):
        s.receive_data(wire({"type": "pong"}), T0 + 1 + i * 0.05)
    assert s.state is State.OPEN


def test_configurable_rate() -> None:
    """rate_per_s and rate_burst come from the settings."""
    s = open_session(rate_per_s=1, rate_burst=2)
    s.receive_data(wire({"type": "pong"}) * 2, T0 + 1)
    assert s.state is State.OPEN
    s.receive_data(wire({"type": "pong"}), T0 + 1.5)
    assert_error(s, "rate_limited")


def test_core_imports_no_twisted() -> None:
    """The sans-IO core (and the package) import nothing from Twisted."""
    import subprocess
    import sys

    code = (
        "import sys; import gateway.localpush.session, gateway.localpush; "
        "sys.exit(1 if any(m.startswith('twisted') for m in sys.modules) else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=6,
)
_TEMPLATES: dict[str, dict[str, Any]] = {
    "hello": hello(),
    "ack": {"type": "ack", "id": "id-2"},
    "ping": {"type": "ping", "id": "p"},
    "pong": {"type": "pong", "id": "p"},
    "call_event": {"type": "call_event", "call_id": "c1", "event": "ringing"},
    "bye": {"type": "bye"},
    "call": {"type": "call", "id": "x"},
    "zzz": {"type": "zzz"},
}


@st.composite
def _client_frames(draw: st.DrawFn) -> dict[str, Any]:
    """A valid client frame with 0-2 members replaced by arbitrary JSON."""
    obj = dict(_TEMPLATES[draw(st.sampled_from(sorted(_TEMPLATES)))])
    names = [n for n in obj if n != "type"]
    for name in draw(st.lists(st.sampled_from(names), max_size=2)) if names else []:
        if draw(st.booleans()):
            obj[name] = draw(_json)
        else:
            obj.pop(name, None)
    return obj


@settings(max_examples=300, deadline=None)
@given(st.booleans(), st.lists(_client_frames(), max_size=8))
def test_random_frames_never_crash(
    after_hello: bool, objs: list[dict[str, Any]]
) -> None:
    """Any well-formed frames with any member values, before or after hello,
    yield events and error frames, never an exception."""
    s = open_session() if after_hello else new_session()
    for i, obj in enumerate(objs):
        s.receive_data(wire(obj), T0 + i)
        s.tick(T0 + i)
        for frame in frames_of(s.data_to_send()):
            assert frame["type"] in {"welcome", "pong", "error"}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=8))
def test_random_bytes_never_crash(chunks: list[bytes]) -> None:
    """Random bytes into a fresh or open session never raise."""
    for s in (new_session(), open_session()):
        for chunk in chunks:
            s.receive_data(chunk, T0)
        s.data_to_send()
