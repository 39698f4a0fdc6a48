"""Server transactions (RFC 3261 17.2) with explicit time."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.sip import (
    Absorbed,
    Action,
    LocalProtocolError,
    NewRequest,
    Request,
    Send,
    StrayAck,
    TimerSettings,
    TransactionLayer,
    TransactionTimeout,
    Transport,
    TxnState,
    build_response,
    parse_message,
)

SRC = ("198.51.100.7", 40000)


def _req(
    method: str = "INVITE",
    branch: str = "z9hG4bKabc",
    cseq_method: str | None = None,
    to_tag: str = "",
    sent_by: str = "198.51.100.7:5060",
) -> Request:
    data = (
        f"{method} sip:bob@example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {sent_by};branch={branch};rport\r\n"
        f"From: <sip:alice@example.com>;tag=f1\r\n"
        f"To: <sip:bob@example.com>{to_tag}\r\n"
        f"Call-ID: call-1@example.com\r\n"
        f"CSeq: 7 {cseq_method or method}\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


def _sent(actions: list[Action]) -> list[bytes]:
    return [a.data.split(b"\r\n", 1)[0] for a in actions if isinstance(a, Send)]


def _new(actions: list[Action]) -> NewRequest:
    (new,) = [a for a in actions if isinstance(a, NewRequest)]
    return new


def test_invite_gets_100_and_goes_to_the_tu() -> None:
    """A new INVITE: 100 Trying at once, then the TU sees it, stamped."""
    layer = TransactionLayer()
    actions = layer.receive(_req(), Transport.UDP, SRC, 0.0)
    assert _sent(actions) == [b"SIP/2.0 100 Trying"]
    new = _new(actions)
    assert new.request.top_via.rport == 40000
    assert new.request.top_via.received == "198.51.100.7"
    send = actions[0]
    assert isinstance(send, Send)
    assert (send.route.host, send.route.port) == SRC
    assert b"rport=40000" in send.data
    assert layer.state(new.key) is TxnState.PROCEEDING


def test_retransmitted_invite_answered_with_last_provisional() -> None:
    """Retransmissions are absorbed and answered with the last 1xx."""
    layer = TransactionLayer()
    new = _new(layer.receive(_req(), Transport.UDP, SRC, 0.0))
    again = layer.receive(_req(), Transport.UDP, SRC, 0.2)
    assert _sent(again) == [b"SIP/2.0 100 Trying"]
    assert isinstance(again[-1], Absorbed)
    layer.respond(new.key, build_response(new.request, 180, to_tag="t"), 0.3)
    again = layer.receive(_req(), Transport.UDP, SRC, 0.4)
    assert _sent(again) == [b"SIP/2.0 180 Ringing"]
    assert not any(isinstance(a, NewRequest) for a in again)


def test_timer_g_doubles_to_t2_and_timer_h_gives_up() -> None:
    """Final non-2xx over UDP: resent at 0.5, 1.5, 3.5, 7.5, 11.5...; H at 32."""
    layer = TransactionLayer(TimerSettings(t1=0.5, t2=4.0))
    new = _new(layer.receive(_req(), Transport.UDP, SRC, 0.0))
    sent = layer.respond(new.key, build_response(new.request, 480, to_tag="t"), 0.0)
    assert _sent(sent) == [b"SIP/2.0 480 Temporarily Unavailable"]
    assert layer.state(new.key) is TxnState.COMPLETED
    resends: list[float] = []
    while (deadline := layer.next_deadline()) is not None:
        actions = layer.tick(deadline)
        if _sent(actions):
            resends.append(deadline)
        if any(isinstance(a, TransactionTimeout) for a in actions):
            assert deadline == 32.0
            break
    assert resends[:6] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5]
    assert all(resend < 32.0 for resend in resends)
    assert layer.state(new.key) is None
    assert len(layer) == 0


def test_ack_confirms_then_timer_i() -> None:
    """ACK (same branch) moves to Confirmed; G stops; I = T4 terminates."""
    layer = TransactionLayer(TimerSettings(t1=0.5, t4=5.0))
    new = _new(layer.receive(_req(), Transport.UDP, SRC, 0.0))
    layer.respond(new.key, build_response(new.request, 486, to_tag="t"), 1.0)
    ack = _req("ACK", to_tag=";tag=t")
    actions = layer.receive(ack, Transport.UDP, SRC, 1.2)
    assert [type(a) for a in actions] == [Absorbed]
    assert layer.state(new.key) is TxnState.CONFIRMED
    assert layer.next_deadline() == 6.2
    # retransmitted INVITE and ACK in Confirmed: absorbed, nothing sent
    assert _sent(layer.receive(_req(), Transport.UDP, SRC, 2.0)) == []
    assert _sent(layer.receive(ack, Transport.UDP, SRC, 2.0)) == []
    assert layer.tick(6.2) == []
    assert layer.state(new.key) is None
    # after the transaction is gone, an ACK is stray
    assert isinstance(layer.receive(ack, Transport.UDP, SRC, 7.0)[0], StrayAck)


def test_retransmitted_invite_in_completed_gets_final() -> None:
    """Completed: a retransmitted INVITE gets the final response again."""
    layer = TransactionLayer()
    new = _new(layer.receive(_req(), Transport.UDP, SRC, 0.0))
    layer.respond(new.key, build_response(new.request, 603, to_tag="t"), 0.0)
    assert _sent(layer.receive(_req(), Transport.UDP, SRC, 0.1)) == [
        b"SIP/2.0 603 Decline"
    ]


def test_reliable_invite_no_timer_g_and_immediate_terminate() -> None:
    """TCP: no Timer G, Timer H still guards the ACK; ACK ends it (I = 0)."""
    layer = TransactionLayer()
    new = _new(layer.receive(_req(), Transport.TCP, SRC, 0.0, connection="c1"))
    sent = layer.respond(new.key, build_response(new.request, 480, to_tag="t"), 0.0)
    (send,) = [a for a in sent if isinstance(a, Send)]
    assert send.route.connection == "c1"
    assert layer.next_deadline() == 32.0
    layer.receive(_req("ACK", to_tag=";tag=t"), Transport.TCP, SRC, 0.1)
    assert layer.state(new.key) is None
    assert layer.next_deadline() is None


def test_non_invite_over_udp_timer_j() -> None:
    """Non-INVITE: no 100; Trying absorbs silently; Completed resends; J."""
    layer = TransactionLayer()
    actions = layer.receive(_req("OPTIONS"), Transport.UDP, SRC, 0.0)
    assert _sent(actions) == []
    new = _new(actions)
    assert layer.state(new.key) is TxnState.TRYING
    again = layer.receive(_req("OPTIONS"), Transport.UDP, SRC, 0.1)
    assert [type(a) for a in again] == [Absorbed]
    layer.respond(new.key, build_response(new.request, 200, to_tag="t"), 0.2)
    assert _sent(layer.receive(_req("OPTIONS"), Transport.UDP, SRC, 0.3)) == [
        b"SIP/2.0 200 OK"
    ]
    assert layer.next_deadline() == pytest.approx(32.2)
    layer.tick(32.2)
    assert layer.state(new.key) is None


def test_non_invite_proceeding_resends_provisional() -> None:
    """Non-INVITE Proceeding: a retransmission gets the last 1xx."""
    layer = TransactionLayer()
    new = _new(layer.receive(_req("MESSAGE"), Transport.UDP, SRC, 0.0))
    layer.respond(new.key, build_response(new.request, 100), 0.0)
    assert layer.state(new.key) is TxnState.PROCEEDING
    assert _sent(layer.receive(_req("MESSAGE"), Transport.UDP, SRC, 0.1)) == [
        b"SIP/2.0 100 Trying"
    ]


def test_non_invite_reliable_terminates_at_once() -> None:
    """Timer J is 0 on reliable transports."""
    layer = TransactionLayer()
    new = _new(layer.receive(_req("OPTIONS"), Transport.TLS, SRC, 0.0))
    layer.respond(new.key, build_response(new.request, 200, to_tag="t"), 0.0)
    assert layer.state(new.key) is None


def test_cancel_finds_its_invite() -> None:
    """CANCEL is its own transaction and locates the INVITE (RFC 3261 9.2)."""
    layer = TransactionLayer()
    invite = _new(layer.receive(_req(), Transport.UDP, SRC, 0.0))
    cancel_actions = layer.receive(_req("CANCEL"), Transport.UDP, SRC, 0.5)
    cancel = _new(cancel_actions)
    assert _sent(cancel_actions) == []
    assert cancel.key != invite.key
    assert layer.find_invite_for_cancel(cancel.request) == invite.key
    stray = _req("CANCEL", branch="z9hG4bKother")
    assert layer.find_invite_for_cancel(stray) is None
    layer.respond(cancel.key, build_response(cancel.request, 200, to_tag="t"), 0.5)
    sent = layer.respond(
        invite.key, build_response(invite.request, 487, to_tag="t"), 0.5
    )
    assert _sent(sent) == [b"SIP/2.0 487 Request Terminated"]


def test_matching_uses_sent_by_and_method() -> None:
    """Same branch from another sent-by, or another method, is a new txn."""
    layer = TransactionLayer()
    first = _new(layer.receive(_req(), Transport.UDP, SRC, 0.0))
    other = layer.receive(_req(sent_by="198.51.100.8"), Transport.UDP, SRC, 0.0)
    assert _new(other).key != first.key
    options = layer.receive(_req("OPTIONS"), Transport.UDP, SRC, 0.0)
    assert _new(options).key.method == "OPTIONS"
    assert len(layer) == 3


def test_2xx_accepted_state() -> None:
    """RFC 6026: after a 2xx, retransmissions are absorbed, ACK goes to the TU."""
    layer = TransactionLayer()
    new = _new(layer.receive(_req(), Transport.UDP, SRC, 0.0))
    layer.respond(new.key, build_response(new.request, 200, to_tag="t"), 0.0)
    assert layer.state(new.key) is TxnState.ACCEPTED
    again = layer.receive(_req(), Transport.UDP, SRC, 0.1)
    assert [type(a) for a in again] == [Absorbed]
    ack = layer.receive(_req("ACK", branch="z9hG4bKack2xx"), Transport.UDP, SRC, 0.2)
    assert isinstance(ack[0], StrayAck)
    same_branch_ack = layer.receive(_req("ACK"), Transport.UDP, SRC, 0.2)
    assert isinstance(same_branch_ack[0], StrayAck)
    layer.tick(32.0)
    assert layer.state(new.key) is None


def test_rfc2543_matching() -> None:
    """Without the magic cookie, URI/tags/Call-ID/CSeq/Via match instead."""
    layer = TransactionLayer()
    old = "1234"
    new = _new(layer.receive(_req(branch=old), Transport.UDP, SRC, 0.0))
    assert new.key.branch == "" and new.key.legacy
    again = layer.receive(_req(branch=old), Transport.UDP, SRC, 0.1)
    assert isinstance(again[-1], Absorbed)
    layer.respond(new.key, build_response(new.request, 480, to_tag="gw"), 0.2)
    wrong_tag = layer.receive(
        _req("ACK", branch=old, to_tag=";tag=zz"), Transport.UDP, SRC, 0.3
    )
    assert isinstance(wrong_tag[0], StrayAck)
    ack = layer.receive(
        _req("ACK", branch=old, to_tag=";tag=gw"), Transport.UDP, SRC, 0.3
    )
    assert [type(a) for a in ack] == [Absorbed]
    assert layer.state(new.key) is TxnState.CONFIRMED
    cancel = _req("CANCEL", branch=old)
    assert layer.find_invite_for_cancel(cancel) == new.key


def test_bare_cookie_branch_is_legacy() -> None:
    """RFC 4475 3.2.1: 'branch=z9hG4bK' alone is not an RFC 3261 branch."""
    layer = TransactionLayer()
    new = _new(layer.receive(_req("OPTIONS", branch="z9hG4bK"), Transport.UDP, SRC, 0))
    assert new.key.branch == ""


def test_local_errors() -> None:
    """Responding twice with a final, or to an unknown key, is our bug."""
    layer = TransactionLayer()
    new = _new(layer.receive(_req(), Transport.UDP, SRC, 0.0))
    layer.respond(new.key, build_response(new.request, 480, to_tag="t"), 0.0)
    with pytest.raises(LocalProtocolError, match="Completed"):
        layer.respond(new.key, build_response(new.request, 180, to_tag="t"), 0.0)
    layer.tick(100.0)
    with pytest.raises(LocalProtocolError, match="no transaction"):
        layer.respond(new.key, build_response(new.request, 480), 100.0)


def test_auto_trying_off() -> None:
    """With auto_trying off the TU sends its own 100."""
    layer = TransactionLayer(auto_trying=False)
    assert _sent(layer.receive(_req(), Transport.UDP, SRC, 0.0)) == []


def test_stale_timers_are_skipped() -> None:
    """Timers of a confirmed transaction never fire resends."""
    layer = TransactionLayer()
    new = _new(layer.receive(_req(), Transport.UDP, SRC, 0.0))
    layer.respond(new.key, build_response(new.request, 480, to_tag="t"), 0.0)
    layer.receive(_req("ACK", to_tag=";tag=t"), Transport.UDP, SRC, 0.1)
    assert layer.tick(4.0) == []
    assert layer.next_deadline() == pytest.approx(5.1)


_OPS = st.lists(
    st.tuples(
        st.sampled_from(["invite", "tick", "1xx", "final", "2xx", "ack", "cancel"]),
        st.floats(min_value=0.0, max_value=2.0),
    ),
    max_size=40,
)


@settings(max_examples=200)
@given(_OPS, st.sampled_from([Transport.UDP, Transport.TCP]))
def test_one_invite_reaches_the_tu_once(
    ops: list[tuple[str, float]], transport: Transport
) -> None:
    """Property: retransmissions, ACKs and timers never re-deliver an INVITE."""
    layer = TransactionLayer()
    now = 0.0
    actions = layer.receive(_req(), transport, SRC, now)
    invite = _new(actions)
    delivered = 1
    final_sent: bytes | None = None
    for op, dt in ops:
        now += dt
        if now >= 30.0:  # a UAC gives up retransmitting by Timer B (32 s)
            break
        state = layer.state(invite.key)
        if op == "invite" and state not in (TxnState.CONFIRMED, None):
            actions = layer.receive(_req(), transport, SRC, now)
            sent = [a.data for a in actions if isinstance(a, Send)]
            if state is TxnState.COMPLETED:
                assert sent == [final_sent]
        elif op == "tick":
            actions = layer.tick(now)
        elif op in ("1xx", "final", "2xx") and state is TxnState.PROCEEDING:
            status = {"1xx": 180, "final": 486, "2xx": 200}[op]
            response = build_response(invite.request, status, to_tag="t")
            actions = layer.respond(invite.key, response, now)
            if op == "final":
                final_sent = response.to_bytes()
        elif op == "ack":
            actions = layer.receive(_req("ACK", to_tag=";tag=t"), transport, SRC, now)
        elif op == "cancel":
            actions = layer.receive(_req("CANCEL"), transport, SRC, now)
        else:
            continue
        delivered += sum(
            isinstance(a, NewRequest) and a.request.method == "INVITE" for a in actions
        )
        assert all(a.route.host == SRC[0] for a in actions if isinstance(a, Send))
    assert delivered == 1


def test_completed_transaction_keeps_the_response_not_the_request() -> None:
    """After the final response the parsed request is let go (fewer objects
    for the GC while the transaction waits 64*T1); retransmissions of the
    request still get the final response."""
    layer = TransactionLayer()
    new = _new(layer.receive(_req(), Transport.UDP, SRC, 0.0))
    assert layer.request(new.key) is new.request
    layer.respond(new.key, build_response(new.request, 486, to_tag="t"), 0.1)
    assert layer.request(new.key) is None
    again = layer.receive(_req(), Transport.UDP, SRC, 0.2)
    assert _sent(again) == [b"SIP/2.0 486 Busy Here"]


def test_timer_h_is_queued_only_when_timer_g_reaches_it() -> None:
    """Over UDP a final response queues Timer G alone; H joins the queue
    from the last G before it, so an ACK in time leaves no H entry behind.
    Over TCP (no G) H is queued at once."""
    layer = TransactionLayer(TimerSettings(t1=0.5, t2=4.0))
    new = _new(layer.receive(_req(), Transport.UDP, SRC, 0.0))
    before = layer.timers_queued
    layer.respond(new.key, build_response(new.request, 486, to_tag="t"), 0.0)
    assert layer.timers_queued == before + 1
    assert layer.next_deadline() == 0.5
    reliable = TransactionLayer(TimerSettings(t1=0.5))
    new = _new(reliable.receive(_req(), Transport.TCP, SRC, 0.0))
    reliable.respond(new.key, build_response(new.request, 486, to_tag="t"), 0.0)
    assert reliable.next_deadline() == 32.0
