"""The ping/pong/ack fast path (codec + session) does exactly what the full
decode does.

``simple_frame`` lets the session skip JSON for the ping every device sends
every ``heartbeat_s`` and the ack of every delivered frame; these tests hold it
to the slow path: same pong bytes, same events, same rate limit, same errors
for anything malformed.
"""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lp_helpers import T0, counter_ids, frames_of, hello, wire

from gateway.localpush.codec import (
    FrameDecoder,
    RemoteProtocolError,
    encode_frame,
    encode_ping,
    encode_pong,
    simple_frame,
)
from gateway.localpush.frames import CallCancelFrame
from gateway.localpush.session import (
    Acked,
    DeviceSession,
    SessionSettings,
    State,
)

MAX = 16384


def raw(body: bytes) -> bytes:
    """A frame with an arbitrary body, built without the codec under test."""
    return struct.pack(">I", len(body)) + body


def open_session(**settings: object) -> DeviceSession:
    """A session past its hello, output drained."""
    s = DeviceSession(
        SessionSettings(**settings),  # type: ignore[arg-type]
        b"integrator-secret-" + b"0123456789abcdef" * 3,
        T0,
        id_factory=counter_ids(),
    )
    s.receive_data(wire(hello()), T0)
    assert s.state is State.OPEN
    s.data_to_send()
    return s


def slow_and_fast(data: bytes, **settings: object) -> tuple[DeviceSession, ...]:
    """Two open sessions fed ``data``: whole (fast path when it applies) and split
    after its first byte (the decoder buffers, so the full decode runs)."""
    fast, slow = open_session(**settings), open_session(**settings)
    fast_events = fast.receive_data(data, T0 + 1)
    slow_events = slow.receive_data(data[:1], T0 + 1)
    slow_events += slow.receive_data(data[1:], T0 + 1)
    assert fast_events == slow_events
    return fast, slow


@pytest.mark.parametrize(
    ("body", "ping_id"),
    [
        pytest.param(b'{"type":"ping","id":"p-1"}', b"p-1", id="compact"),
        pytest.param(b'{"type": "ping", "id": "abc"}', b"abc", id="spaced"),
        pytest.param(b'{"id":"x","type":"ping"}', b"x", id="id-first"),
        pytest.param(b'{\n\t"type" : "ping" ,\r\n "id":""\n}', b"", id="empty-id"),
        pytest.param(b'{"type":"ping","id":"' + b"a" * 256 + b'"}', b"a" * 256),
        pytest.param(b'{"type":"ping","id":"a/b~ {}[]:,"}', b"a/b~ {}[]:,"),
    ],
)
def test_simple_pings_match(body: bytes, ping_id: bytes) -> None:
    """The common ping shapes are recognised, with the id the JSON holds."""
    assert simple_frame(raw(body), MAX) == (b"ping", ping_id)
    (frame,) = FrameDecoder(MAX).feed(raw(body))
    assert frame.type == "ping"
    assert frame.get("id") == ping_id.decode()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"type":"ack","id":"6d3e2a1c-0000-4000-8000-000000000001"}',
         (b"ack", b"6d3e2a1c-0000-4000-8000-000000000001")),
        (b'{"id": "x", "type": "ack"}', (b"ack", b"x")),
        (b'{"type":"pong","id":"p"}', (b"pong", b"p")),
    ],
)  # fmt: skip
def test_simple_acks_and_pongs_match(
    body: bytes, expected: tuple[bytes, bytes]
) -> None:
    """Acks and pongs of the same shape are recognised too."""
    assert simple_frame(raw(body), MAX) == expected


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(raw(b'{"type":"ping"}'), id="no-id"),
        pytest.param(raw(b'{"type":"ping","id":7}'), id="int-id"),
        pytest.param(raw(b'{"type":"ping","id":null}'), id="null-id"),
        pytest.param(raw(b'{"type":"ping","id":"a\\"b"}'), id="escaped-quote"),
        pytest.param(raw(b'{"type":"ping","id":"\\u0041"}'), id="unicode-escape"),
        pytest.param(raw(b'{"type":"ping","id":"\\ud800"}'), id="lone-surrogate"),
        pytest.param(raw('{"type":"ping","id":"é"}'.encode()), id="non-ascii"),
        pytest.param(raw(b'{"type":"ping","id":"a\x01"}'), id="control-char"),
        pytest.param(raw(b'{"type":"ping","id":"\xff"}'), id="not-utf8"),
        pytest.param(raw(b'{"type":"ping","id":"' + b"a" * 257 + b'"}'), id="long"),
        pytest.param(raw(b'{"type":"ping","id":"a","x":1}'), id="extra-member"),
        pytest.param(raw(b'{"type":"ping","id":"a","id":"b"}'), id="dup-id"),
        pytest.param(raw(b'{"type":"ping","type":"ping","id":"a"}'), id="dup-type"),
        pytest.param(raw(b'{"type":"bye","id":"a"}'), id="bye"),
        pytest.param(raw(b'{"type":"ack","id":5}'), id="int-ack-id"),
        pytest.param(raw(b'{"type":"ack"}'), id="ack-no-id"),
        pytest.param(raw(b'{"type":"Ping","id":"a"}'), id="case"),
        pytest.param(raw(b'{"type":"ping","id":"a"'), id="truncated-json"),
        pytest.param(raw(b'{"type":"ping","id":"a"}\x0b'), id="vt-not-json-space"),
        pytest.param(raw(b'{"type":"ping","id":"a"}') * 2, id="two-frames"),
        pytest.param(raw(b'{"type":"ping","id":"a"}')[:-1], id="incomplete"),
        pytest.param(raw(b'{"type":"ping","id":"a"}') + b"\x00", id="trailing"),
        pytest.param(b"\x00\x00\x00", id="short-header"),
        pytest.param(b"\x00\x00\x00\x00", id="empty-frame"),
    ],
)
def test_other_input_takes_the_full_decode(data: bytes) -> None:
    """Anything but one complete simple ping returns None (decode it in full)."""
    assert simple_frame(data, MAX) is None


def test_max_frame_still_applies() -> None:
    """A ping longer than max_frame is not matched (the decoder refuses it)."""
    data = raw(b'{"type":"ping","id":"abcdef"}')
    assert simple_frame(data, len(data) - 4) == (b"ping", b"abcdef")
    assert simple_frame(data, len(data) - 5) is None


_ID_ALPHABET = st.characters(
    min_codepoint=0x20, max_codepoint=0x7E, exclude_characters='"\\'
)


@settings(max_examples=300, deadline=None)
@given(st.text(_ID_ALPHABET, max_size=256))
def test_encode_pong_is_encode_frame(ping_id: str) -> None:
    """encode_pong and encode_ping write the very bytes encode_frame writes;
    the matchers read the id back, each only for its own type."""
    pong = encode_pong(ping_id.encode())
    assert pong == encode_frame({"type": "pong", "id": ping_id}, MAX)
    ping = encode_ping(ping_id.encode())
    assert ping == encode_frame({"type": "ping", "id": ping_id}, MAX)
    assert simple_frame(pong, MAX) == (b"pong", ping_id.encode())
    assert simple_frame(ping, MAX) == (b"ping", ping_id.encode())


_ws = st.text(" \t\r\n", max_size=2)


@st.composite
def _ping_like(draw: st.DrawFn) -> bytes:
    """JSON that looks like a ping, pong or ack: any id value, either order,
    any spacing."""
    ping_id = draw(st.one_of(st.text(max_size=20), st.integers(), st.none()))
    kind = draw(st.sampled_from(["ping", "pong", "ack", "ping2"]))
    members = [f'"type"{draw(_ws)}:{draw(_ws)}"{kind}"']
    members.append(f'"id"{draw(_ws)}:{draw(_ws)}{json.dumps(ping_id)}')
    if draw(st.booleans()):
        members.reverse()
    return ("{" + draw(_ws) + f"{draw(_ws)},{draw(_ws)}".join(members) + "}").encode()


@settings(max_examples=400, deadline=None)
@given(_ping_like())
def test_match_agrees_with_full_decode(body: bytes) -> None:
    """Whenever the fast path matches, the full decode gives the same type/id."""
    simple = simple_frame(raw(body), MAX)
    if simple is None:
        return
    (frame,) = FrameDecoder(MAX).feed(raw(body))
    assert (frame.type, frame.get("id")) == (simple[0].decode(), simple[1].decode())


@settings(max_examples=300, deadline=None)
@given(st.one_of(_ping_like(), st.binary(max_size=40)))
def test_session_fast_and_slow_paths_agree(body: bytes) -> None:
    """A session answers a frame fed whole (fast path if it matches) exactly as
    the same frame fed in two pieces (always the full decode)."""
    fast, slow = slow_and_fast(raw(body))
    assert fast.data_to_send() == slow.data_to_send()
    assert fast.state is slow.state


@pytest.mark.parametrize(
    "body",
    [
        b'{"type":"ping","id":"p-1"}',
        b'{"id": "p-2", "type": "ping"}',
        b'{"type":"ping","id":"' + b"z" * 257 + b'"}',
        b'{"type":"ping"}',
    ],
)
def test_pong_bytes_match(body: bytes) -> None:
    """Fast and slow paths write the same pong, byte for byte."""
    fast, slow = slow_and_fast(raw(body))
    out = fast.data_to_send()
    assert out == slow.data_to_send()
    (pong,) = frames_of(out)
    assert pong["type"] == "pong"


def test_acks_fast_and_slow() -> None:
    """An ack for a pending frame gives Acked on both paths; an unknown or
    repeated ack gives nothing; no bytes are written."""
    fast, slow = open_session(), open_session()
    spec = CallCancelFrame(call_id="c1", reason="failed")
    frame_id = fast.send(spec, T0 + 0.5)
    assert slow.send(spec, T0 + 0.5) == frame_id
    fast.data_to_send(), slow.data_to_send()
    results = []
    for ack_id in (frame_id, frame_id, "unknown"):
        data = raw(b'{"type":"ack","id":"%s"}' % ack_id.encode())
        fast_events = fast.receive_data(data, T0 + 1)
        slow_events = slow.receive_data(data[:5], T0 + 1)
        slow_events += slow.receive_data(data[5:], T0 + 1)
        assert fast_events == slow_events
        results.append(fast_events)
    assert results == [[Acked(frame_id=frame_id)], [], []]
    assert fast.unacked == slow.unacked == ()
    assert fast.data_to_send() == slow.data_to_send() == b""


def test_fast_ping_resets_idle_clock() -> None:
    """A ping on the fast path moves the idle deadline like any frame."""
    s = open_session()
    before = s.next_deadline()
    assert before is not None
    s.receive_data(raw(b'{"type":"ping","id":"a"}'), T0 + 10)
    assert s.next_deadline() == before + 10


def test_fast_pings_are_rate_limited() -> None:
    """Fast-path pings spend the same budget: the 3rd at once is rate_limited."""
    ping = raw(b'{"type":"ping","id":"a"}')
    fast, slow = open_session(rate_burst=2), open_session(rate_burst=2)
    for _ in range(3):
        fast_events = fast.receive_data(ping, T0 + 1)
        slow_events = slow.receive_data(ping[:2], T0 + 1)
        slow_events += slow.receive_data(ping[2:], T0 + 1)
        assert fast_events == slow_events
    out = fast.data_to_send()
    assert out == slow.data_to_send()
    assert [f["type"] for f in frames_of(out)] == ["pong", "pong", "error"]
    assert frames_of(out)[-1]["code"] == "rate_limited"
    assert fast.should_close


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (raw(b'{"type":"ping","id":"a"'), "bad_frame"),
        (raw(b'{"type":"ping","id":"\\ud800"}'), "bad_frame"),
        (raw(b'{"type":"ping","id":"\xff"}'), "bad_frame"),
        (b"\x00\x00\x00\x00", "bad_frame"),
        (struct.pack(">I", MAX + 1) + b'{"type":"ping","id":"a"}', "frame_too_large"),
    ],
)
def test_malformed_pings_keep_their_error_codes(data: bytes, code: str) -> None:
    """Broken pings are refused with the codes localpush.md gives, and close."""
    s = open_session()
    s.receive_data(data, T0 + 1)
    (frame,) = frames_of(s.data_to_send())
    assert (frame["type"], frame["code"]) == ("error", code)
    assert s.should_close


def test_ping_before_hello_needs_handshake() -> None:
    """The fast path is for open sessions: a first-frame ping is still refused."""
    s = DeviceSession(SessionSettings(), b"x" * 32, T0, id_factory=counter_ids())
    s.receive_data(raw(b'{"type":"ping","id":"a"}'), T0)
    (frame,) = frames_of(s.data_to_send())
    assert frame["code"] == "handshake_required"


def test_decoder_error_is_not_bypassed() -> None:
    """After a decode error nothing more is answered, ping or not."""
    s = open_session()
    s.receive_data(b"\x00\x00\x00\x00", T0 + 1)
    s.data_to_send()
    assert s.receive_data(raw(b'{"type":"ping","id":"a"}'), T0 + 2) == []
    assert s.data_to_send() == b""
    with pytest.raises(RemoteProtocolError):
        FrameDecoder(MAX).feed(b"\x00\x00\x00\x00")
