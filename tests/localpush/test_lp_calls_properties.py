"""Calls and messages end to end without sockets: the SIP front, the
dispatcher, the messenger, the real hub and device sessions over
StringTransport, APNs faked. A core sends anything; devices connect, ack,
decline, answer, vanish and come back (resume replay) in any order. Nothing
fails, devices only get well-formed frames, no device that got a call is
left ringing when it ends, no call pushes one device twice, no call
answered on a device gets a missed-call alert,
a message goes once per session and is forgotten once acked in time, and
once everyone is gone and the timers have run (a graceful stop may come
at any point), no call, transaction, session or timer is left.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from gw_fakes import OUTCOMES
from gw_front import PEER, Front, make_front, request
from gw_sipgen import sip_requests
from hypothesis import event as record
from hypothesis import given, note, settings
from hypothesis import strategies as st
from lp_helpers import SECRET, Transport, counter_ids, frames_of, hello, wire
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from gateway.apns import Delivered
from gateway.apns._payload import MISSED_CALLS_THREAD
from gateway.directory import RegistryDirectory
from gateway.localpush.hub import Hub
from gateway.localpush.server import LocalPushFactory
from gateway.localpush.session import SessionSettings
from gateway.store import Registry

DEVICES = ("phone", "ipad")
FRAME_TYPES = {"welcome", "pong", "ping", "error", "goaway", "call", "call_cancel"}
FRAME_TYPES |= {"message"}
ACKED = ("call", "call_cancel", "message")
ACK_TIMEOUT_S = 3.0

_REASONS = (
    "",
    'Reason: SIP;cause=200;text="elsewhere"\r\n',
    "Reason: SIP;cause=603\r\n",
)
# Good INVITEs and the CANCELs that match them, next to anything at all.
_CALL = st.builds(
    lambda n: request("INVITE", branch=f"z9hG4bK-i{n}", call_id=f"i{n}"),
    st.integers(0, 3),
)
_CANCEL = st.builds(
    lambda n, why: request(
        "CANCEL", branch=f"z9hG4bK-i{n}", call_id=f"i{n}", headers=why
    ),
    st.integers(0, 3),
    st.sampled_from(_REASONS),
)
_MESSAGE = st.builds(
    lambda n: request(
        "MESSAGE",
        branch=f"z9hG4bK-m{n}",
        call_id=f"m{n}",
        headers="Content-Type: text/plain\r\n",
        body=b"hello",
    ),
    st.integers(0, 3),
)
_STEP = st.one_of(
    st.tuples(st.just("sip"), sip_requests()),
    st.tuples(st.just("sip"), _MESSAGE),
    st.tuples(st.just("sip"), _CALL),
    st.tuples(st.just("sip"), _CALL),
    st.tuples(st.just("sip"), _CANCEL),
    st.tuples(st.just("connect"), st.sampled_from(DEVICES)),
    st.tuples(st.just("ack"), st.integers(0, 3)),
    st.tuples(st.just("ack"), st.integers(0, 3)),
    st.tuples(
        st.just("event"),
        st.integers(0, 3),
        st.sampled_from(("answered", "declined", "ringing")),
    ),
    st.tuples(st.just("lose"), st.integers(0, 3)),
    st.tuples(st.just("apns"), st.integers(0, 7), st.sampled_from(OUTCOMES)),
    st.tuples(st.just("time"), st.sampled_from((0.5, 3.5, 32.0))),
    st.just(("shutdown",)),
    st.tuples(st.just("forget"), st.sampled_from(DEVICES)),  # API DELETE
    st.tuples(st.just("untoken"), st.sampled_from(("aa" * 32, "AB" * 32))),
)


class Conn:
    """A device connection, what it was sent, and which of its acks count:
    those sent on the live session within the ack timeout (localpush.md:
    a late ack, or one on a replaced session, is ignored)."""

    def __init__(self, front: Front, factory: LocalPushFactory, device_id: str) -> None:
        peer = IPv4Address("TCP", "192.0.2.7", 50000)
        self.clock = front.clock
        self.proto = factory.buildProtocol(peer)
        self.tr = Transport(peerAddress=peer)
        self.proto.makeConnection(self.tr)
        self.frames: list[dict[str, Any]] = []
        self.arrived: dict[str, float] = {}
        self.acked: set[str] = set()
        self.counted: set[str] = set()
        self.reported: set[str] = set()  # calls this device answered or declined
        self.answered: set[str] = set()
        self.live = True  # neither lost nor replaced
        self.lost = False
        self.device_id = device_id
        self.proto.dataReceived(wire(hello(device_id, now=self.clock.seconds())))

    def drain(self) -> None:
        new = frames_of(self.tr.value())
        self.tr.clear()
        for frame in new:
            assert frame.get("type") in FRAME_TYPES, frame
            if "id" in frame:
                self.arrived.setdefault(frame["id"], self.clock.seconds())
        self.frames += new

    def send(self, obj: dict[str, Any]) -> None:
        # Twisted stops reading once the server closes (loseConnection).
        if not self.lost and not self.tr.disconnecting:
            self.proto.dataReceived(wire(obj))

    def ack_all(self) -> None:
        if self.lost or self.tr.disconnecting:
            return
        now = self.clock.seconds()
        for frame in self.frames:
            frame_id = frame.get("id")
            if frame["type"] in ACKED and frame_id not in self.acked:
                self.acked.add(frame_id)
                if self.live and now - self.arrived[frame_id] < ACK_TIMEOUT_S:
                    self.counted.add(frame_id)
                self.send({"type": "ack", "id": frame_id})

    def lose(self) -> None:
        self.live = False
        if not self.lost:
            self.lost = True
            self.proto.connectionLost()


def _answer_pushes(front: Front) -> None:
    """APNs answers every push still open (answers may lead to more)."""
    for _ in range(10):
        for i, (_, d) in enumerate(front.apns.pushes):
            if not d.called:
                front.apns.answer(i, Delivered("late"))


def _real_hub(clock: Clock, registry: Registry) -> Hub:
    return Hub(clock, RegistryDirectory(registry))


def _apply(
    front: Front, factory: LocalPushFactory, conns: list[Conn], step: tuple[Any, ...]
) -> None:
    kind = step[0]
    if kind == "sip":
        front.send(step[1], PEER)
    elif kind == "connect":
        for conn in conns:
            if conn.device_id == step[1]:
                conn.live = False  # the new session replaces it
        conns.append(Conn(front, factory, step[1]))
    elif kind == "apns":
        pending = [i for i, (_, d) in enumerate(front.apns.pushes) if not d.called]
        if pending:
            front.apns.answer(pending[step[1] % len(pending)], step[2])
    elif kind == "time":
        front.clock.advance(step[1])
    elif kind == "forget":
        front.registry.delete_device(step[1])
    elif kind == "untoken":  # what the APNs client does on 410 Unregistered
        front.registry.remove_token(step[1])
    elif kind == "shutdown":
        # What the gateway's services do on stop, in their order; devices and
        # APNs may still answer afterwards.
        front.app.shutdown(5)
        front.server.stop()
        front.hub.shutdown(2.0)
        front.dispatcher.stop()
    elif conns:
        conn = conns[step[1] % len(conns)]
        if kind == "ack":
            conn.ack_all()
        elif kind == "event":
            calls = [f["call_id"] for f in conn.frames if f["type"] == "call"]
            if calls:
                if step[2] != "ringing" and not conn.tr.disconnecting and not conn.lost:
                    conn.reported.add(calls[-1])
                    call = front.dispatcher.get(calls[-1])
                    if step[2] == "answered" and call and not call.machine.ended:
                        conn.answered.add(calls[-1])  # answered while it rang
                conn.send(
                    {"type": "call_event", "call_id": calls[-1], "event": step[2]}
                )
        else:
            conn.lose()
    for conn in conns:
        conn.drain()


@settings(max_examples=200)
@given(st.lists(_STEP, max_size=30))
def test_calls_with_real_sessions_end_cleanly(steps: list[tuple[Any, ...]]) -> None:
    front = make_front(_real_hub)
    factory = LocalPushFactory(
        settings=SessionSettings(ack_timeout_s=ACK_TIMEOUT_S, heartbeat_s=30),
        secret=SECRET,
        hub=front.hub,
        clock=front.clock,
        id_factory=counter_ids(),
    )
    conns: list[Conn] = []
    note(repr([s if s[0] != "sip" else ("sip", s[1][:30]) for s in steps]))
    with capturedLogs() as events:
        for step in steps:
            _apply(front, factory, conns, step)
        _answer_pushes(front)
        front.clock.advance(40)  # every call has rung out (ring timeout 30 s)
        for conn in conns:
            conn.drain()
            if not conn.lost and not conn.tr.disconnecting:
                rung = {f["call_id"] for f in conn.frames if f["type"] == "call"}
                ended = {
                    f["call_id"] for f in conn.frames if f["type"] == "call_cancel"
                }
                assert rung <= ended | conn.reported, "a phone left ringing"
        for conn in conns:
            sent = [f["message_id"] for f in conn.frames if f["type"] == "message"]
            assert len(sent) == len(set(sent))  # once per session
            acked = {
                f["message_id"]
                for f in conn.frames
                if f["type"] == "message" and f["id"] in conn.counted
            }
            pending = front.registry.pending_messages(
                conn.device_id, front.clock.seconds()
            )
            assert not acked & {m.message_id for m in pending}  # acked is gone
            conn.lose()
        _answer_pushes(front)
        for _ in range(30):
            front.clock.advance(30)
    assert [e for e in events if "log_failure" in e] == []
    for response in front.responses():
        if response.cseq is not None and response.cseq.method == "INVITE":
            record(f"INVITE {response.status}")  # --hypothesis-show-statistics
    for conn in conns:
        for frame in conn.frames:
            record(f"frame {frame['type']}")
    voip = Counter(
        (json.loads(n.payload)["callUUID"], n.device_token)
        for n, _ in front.apns.pushes
        if n.push_type.value == "voip"
    )
    assert all(count == 1 for count in voip.values())
    answered = {c for conn in conns for c in conn.answered}
    for notification, _ in front.apns.pushes:
        payload = json.loads(notification.payload)
        if payload.get("aps", {}).get("thread-id") == MISSED_CALLS_THREAD:
            assert payload["callUUID"] not in answered  # answered is not missed
    assert front.dispatcher.held_count == 0
    if ("shutdown",) not in steps:  # a stopped server's transactions just stay
        assert front.server.transactions == 0
    assert front.hub.online_count == 0
    assert front.clock.getDelayedCalls() == []
