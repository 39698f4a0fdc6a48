"""Whatever a SIP core and the devices do, in whatever order, the front
answers and forgets: no handler fails, no 500, every response well formed,
and once the devices and APNs have answered and the timers have run, no
call and no transaction is left behind.

Requests are built from parts a core really sends (and parts it should
not): matching and non-matching branches and Call-IDs, RFC 3326 Reasons,
RFC 8599 contacts, odd Expires, bodies, custom headers. Between them,
devices ack or lose frames, send call events, APNs answers, time passes.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from gw_fakes import OUTCOMES
from gw_front import PEER, Front, make_front
from gw_sipgen import sip_requests
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.logger import capturedLogs

from gateway.apns import Delivered
from gateway.sip import Response, parse_message

_STEP = st.one_of(
    st.tuples(
        st.just("sip"), sip_requests(), st.sampled_from((PEER, ("192.0.2.9", 5060)))
    ),
    st.tuples(st.just("online"), st.booleans()),
    st.tuples(st.just("hub"), st.integers(0, 7), st.booleans()),
    st.tuples(st.just("apns"), st.integers(0, 7), st.sampled_from(OUTCOMES)),
    st.tuples(
        st.just("event"),
        st.integers(0, 3),
        st.sampled_from(("answered", "declined", "ringing", "bogus")),
    ),
    st.tuples(st.just("time"), st.sampled_from((0.5, 4.0, 32.0))),
)


def _apply(front: Front, step: tuple[Any, ...]) -> None:
    kind = step[0]
    if kind == "sip":
        front.send(step[1], step[2])
    elif kind == "online":
        (front.hub.online.add if step[1] else front.hub.online.discard)("phone")
    elif kind == "hub":
        pending = [i for i, (_, _, d) in enumerate(front.hub.sent) if not d.called]
        if pending:
            front.hub.ack(pending[step[1] % len(pending)], delivered=step[2])
    elif kind == "apns":
        pending = [i for i, (_, d) in enumerate(front.apns.pushes) if not d.called]
        if pending:
            front.apns.answer(pending[step[1] % len(pending)], step[2])
    elif kind == "event":
        calls = [
            frame.call_id for _, frame, _ in front.hub.sent if hasattr(frame, "caller")
        ]
        if calls:
            front.dispatcher.on_call_event(
                "phone", calls[step[1] % len(calls)], step[2]
            )
    else:
        front.clock.advance(step[1])


def _settle(front: Front) -> None:
    """Every device and APNs answers what is still open, then time runs out."""
    for _ in range(10):
        open_hub = [i for i, (_, _, d) in enumerate(front.hub.sent) if not d.called]
        open_apns = [i for i, (_, d) in enumerate(front.apns.pushes) if not d.called]
        if not open_hub and not open_apns:
            break
        for i in open_hub:
            front.hub.ack(i, delivered=False, reason="session_died")
        for i in open_apns:
            front.apns.answer(i, Delivered("apns-late"))
    for _ in range(20):
        front.clock.advance(30)


@settings(max_examples=300)
@given(st.lists(_STEP, max_size=25))
def test_any_sequence_is_answered_and_forgotten(steps: list[tuple[Any, ...]]) -> None:
    front = make_front()
    with capturedLogs() as events:
        for step in steps:
            _apply(front, step)
        _settle(front)
    failures = [e for e in events if "log_failure" in e]
    assert failures == [], failures[0]["log_failure"].getTraceback()
    for data, _ in front.udp.sent:
        response = parse_message(data)
        assert isinstance(response, Response)
        assert response.status != 500
        if response.cseq is not None and response.cseq.method == "INVITE":
            assert (response.status == 100) == (
                response.header("X-Push-Status") is None
            )
    voip = Counter(
        (json.loads(n.payload)["callUUID"], n.device_token)
        for n, _ in front.apns.pushes
        if n.push_type.value == "voip"
    )
    assert all(count == 1 for count in voip.values())  # one per call and device
    assert front.dispatcher.held_count == 0
    assert front.server.transactions == 0
