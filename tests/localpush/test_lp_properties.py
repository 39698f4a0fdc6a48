"""Devices doing anything, in any order, over the real adapter and hub: no
handler fails, the server only ever writes well-formed frames, a device that
behaves is not disturbed by the others, and once every connection is gone
every delivery has an answer and no timer is left on the clock.
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from lp_helpers import T0, World, frames_of, hello, result_of, wire
from twisted.internet.defer import Deferred
from twisted.logger import capturedLogs

from gateway.localpush.frames import (
    CallCancelFrame,
    CallFrame,
    FrameSpec,
    MessageFrame,
    Party,
)
from gateway.localpush.hub import DeliveryResult

DEVICES = ("dev-0", "dev-1", "dev-2")
WITNESS = "witness"
SERVER_TYPES = {"welcome", "pong", "ping", "error", "goaway", "call", "call_cancel"}
SERVER_TYPES |= {"message"}

_ids = st.one_of(
    st.sampled_from(("id-1", "id-2", "id-3", "", "x" * 300)), st.text(max_size=8)
)
_FRAMES = st.one_of(
    st.builds(lambda i: {"type": "ping", "id": i}, _ids),
    st.builds(lambda i: {"type": "ack", "id": i}, _ids),
    st.builds(lambda n: {"type": "ack", "sent": n}, st.integers(0, 5)),
    st.builds(
        lambda c, e: {"type": "call_event", "call_id": c, "event": e},
        st.sampled_from(("c1", "c2", "nope")),
        st.sampled_from(("ringing", "answered", "declined", "bogus")),
    ),
    st.just({"type": "bye"}),
    st.just({"type": "pong", "id": "p"}),
    st.just({"type": "call", "id": "x"}),
    st.just({"type": "zzz"}),
    st.builds(hello, st.sampled_from(DEVICES)),
    st.builds(lambda v: hello(DEVICES[0], v=v), st.sampled_from((0, 2, "1", None))),
    st.builds(
        lambda t: hello(DEVICES[1], token=t), st.sampled_from(("", "a.b.c", "x"))
    ),
)
_STEP = st.one_of(
    st.tuples(st.just("connect"), st.sampled_from(DEVICES)),
    st.tuples(st.just("frame"), st.integers(0, 5), _FRAMES, st.booleans()),
    st.tuples(st.just("ack_last"), st.integers(0, 5)),
    st.tuples(st.just("bytes"), st.integers(0, 5), st.binary(max_size=30)),
    st.tuples(
        st.just("deliver"),
        st.sampled_from(DEVICES),
        st.sampled_from(("call", "cancel", "message")),
    ),
    st.tuples(st.just("lose"), st.integers(0, 5)),
    st.tuples(st.just("time"), st.sampled_from((0.1, 1.0, 3.5, 40.0))),
)


class Device:
    """One connection and what the server wrote to it."""

    def __init__(self, world: World, device_id: str | None) -> None:
        self.proto, self.tr = world.connect()
        self.frames: list[dict[str, Any]] = []
        self.lost = False
        if device_id is not None:
            now = world.clock.seconds()
            self.proto.dataReceived(wire(hello(device_id, now=now)))

    def drain(self) -> list[dict[str, Any]]:
        new = frames_of(self.tr.value())
        self.tr.clear()
        self.frames += new
        return new

    def send(self, data: bytes, one_byte_writes: bool = False) -> None:
        if self.lost:
            return
        chunks = (
            [data[i : i + 1] for i in range(len(data))] if one_byte_writes else [data]
        )
        for chunk in chunks:
            self.proto.dataReceived(chunk)

    def lose(self) -> None:
        if not self.lost:
            self.lost = True
            self.proto.connectionLost()


def _spec(kind: str, n: int) -> FrameSpec:
    if kind == "call":
        return CallFrame(
            call_id=f"c{n}",
            caller=Party(handle="+4930123"),
            video=False,
            to="sip:bob@example.com",
            expires_at=T0 + 3600,
        )
    if kind == "cancel":
        return CallCancelFrame(call_id=f"c{n}", reason="remote_ended")
    return MessageFrame(
        message_id=f"m{n}", sender=Party(handle="x"), body="hi", sent_at=T0
    )


def _apply(
    world: World,
    conns: list[Device],
    pending: list[Deferred[DeliveryResult]],
    numbers: itertools.count[int],
    step: tuple[Any, ...],
) -> None:
    kind = step[0]
    if kind == "connect":
        conns.append(Device(world, step[1]))
    elif kind == "deliver":
        pending.append(world.hub.deliver(step[1], _spec(step[2], next(numbers))))
    elif kind == "time":
        world.clock.advance(step[1])
    elif conns:
        conn = conns[step[1] % len(conns)]
        if kind == "frame":
            conn.send(wire(step[2]), one_byte_writes=step[3])
        elif kind == "ack_last":
            ids = [f["id"] for f in conn.frames if "id" in f and f["type"] != "pong"]
            if ids:
                conn.send(wire({"type": "ack", "id": ids[-1]}))
        elif kind == "bytes":
            conn.send(step[2])
        else:
            conn.lose()


@settings(max_examples=300)
@given(st.lists(_STEP, max_size=30))
def test_any_device_behaviour_is_contained(steps: list[tuple[Any, ...]]) -> None:
    world = World(ack_timeout_s=3, heartbeat_s=30)
    pending: list[Deferred[DeliveryResult]] = []
    numbers = itertools.count(1)
    with capturedLogs() as events:
        witness = Device(world, WITNESS)
        conns: list[Device] = []
        for step in steps:
            _apply(world, conns, pending, numbers, step)
            for conn in conns:
                for frame in conn.drain():
                    assert frame.get("type") in SERVER_TYPES, frame
            # the witness keeps its session alive as a real device would
            witness.send(wire({"type": "ping", "id": "w"}))
        witness.drain()
        d = world.hub.deliver(WITNESS, _spec("call", 0))
        (frame,) = witness.drain()
        witness.send(wire({"type": "ack", "id": frame["id"]}))
        assert result_of(d).delivered
        for conn in [*conns, witness]:
            conn.lose()
        world.clock.advance(120)
    assert [e for e in events if "log_failure" in e] == []
    assert all(isinstance(result_of(p), DeliveryResult) for p in pending)
    assert world.hub.online_count == 0
    assert world.clock.getDelayedCalls() == []
