"""The SIP front (calls.md "Requests") through the real transaction layer.

Bytes in through ``SipServer.receive``, responses captured at the UDP send,
devices and APNs faked (tests/gw_fakes.py), time on ``task.Clock``.
"""

from __future__ import annotations

import attrs
import pytest
from gw_front import AOR, PEER, Front, make_front, request
from twisted.logger import capturedLogs

from gateway.apns import Delivered
from gateway.localpush.frames import CallCancelFrame, CallFrame, MessageFrame
from gateway.sip import (
    Response,
    TimerSettings,
    TransactionLayer,
    Transport,
    parse_message,
)
from gateway.sipserver.application import SipApplication
from gateway.sipserver.overload import LagMonitor, OverloadGuard, OverloadSettings
from gateway.sipserver.server import SipServer
from gateway.sipserver.service import SipService


@pytest.fixture
def front() -> Front:
    return make_front()


def test_options_200_with_allow_and_accept(front: Front) -> None:
    """OPTIONS (the core's health check): 200 with Allow and Accept."""
    front.send(request("OPTIONS", "sip:gw@127.0.0.1"))
    [response] = front.responses()
    assert response.status == 200
    assert "INVITE" in (response.header("Allow") or "")
    assert "text/plain" in (response.header("Accept") or "")


def test_unknown_aor_100_then_404_with_push_status(front: Front) -> None:
    """INVITE to an AOR without devices: 100 at once, then 404, X-Push-Status none."""
    front.send(request("INVITE", "sip:nobody@example.com"))
    r100, r404 = front.responses()
    assert (r100.status, r404.status) == (100, 404)
    assert r100.header("X-Push-Status") is None
    assert r404.header("X-Push-Status") == "none"


def test_invite_rings_over_local_push_then_cancel_answered_elsewhere(
    front: Front,
) -> None:
    """Online device: call frame, ack -> 180; CANCEL cause=200 -> 200/487, no alert."""
    front.hub.online.add("phone")
    front.send(
        request(
            "INVITE",
            headers=(
                'P-Asserted-Identity: "Alice Doe" <sip:+4930999@core.example.com>\r\n'
                "X-Customer-Id: 42\r\nX-Too-Long: " + "y" * 50 + "\r\n"
            ),
        )
    )
    assert front.statuses() == [100]
    [(device_id, frame, _)] = front.hub.sent
    assert device_id == "phone"
    assert isinstance(frame, CallFrame)
    assert (frame.caller.handle, frame.caller.display_name) == ("+4930999", "Alice Doe")
    assert frame.headers == (("X-Customer-Id", "42"),)  # the rest is over 40 bytes
    front.hub.ack(0)
    [ringing] = front.responses()
    assert (ringing.status, ringing.header("X-Push-Status")) == (180, "local;acked")
    front.send(
        request(
            "CANCEL",
            headers='Reason: SIP;cause=200;text="Call completed elsewhere"\r\n',
        )
    )
    statuses = {(r.status, r.cseq.method if r.cseq else "") for r in front.responses()}
    assert statuses == {(200, "CANCEL"), (487, "INVITE")}
    [(_, cancel, _)] = front.hub.sent[1:]
    assert cancel == CallCancelFrame(call_id=frame.call_id, reason="answered_elsewhere")
    front.hub.ack(1)
    assert front.apns.pushes == []  # answered elsewhere is not a missed call


def test_retransmitted_invite_is_one_call(front: Front) -> None:
    """A retransmitted INVITE is absorbed: one frame, the last response again."""
    front.hub.online.add("phone")
    front.send(request("INVITE"))
    front.hub.ack(0)
    assert front.statuses() == [100, 180]
    front.send(request("INVITE"))
    front.send(request("INVITE"))
    assert len(front.hub.sent) == 1
    assert front.statuses() == [180, 180]


def test_offline_device_pushed_then_ring_timeout_480(front: Front) -> None:
    """No session: VoIP push, 200 -> 180 apns;accepted; ring timeout -> 480 + alert."""
    front.send(request("INVITE"))
    [(push, _)] = front.apns.pushes
    assert push.topic == "com.x.voip"
    front.apns.answer(0, Delivered("apns-id"))
    assert [(r.status, r.header("X-Push-Status")) for r in front.responses()] == [
        (100, None),
        (180, "apns;accepted"),
    ]
    front.clock.advance(30)
    [final] = front.responses()
    assert (final.status, final.header("X-Push-Status")) == (480, "apns;accepted")
    [(alert, _)] = front.apns.pushes[1:]
    assert alert.push_type.value == "alert"
    front.send(request("ACK"))
    front.clock.advance(64)
    assert front.responses() == []  # ACK stopped the 480's retransmissions


def test_expires_header_caps_ring_timeout(front: Front) -> None:
    """An INVITE's Expires shortens the ring."""
    front.hub.online.add("phone")
    front.send(request("INVITE", headers="Expires: 5\r\n"))
    front.hub.ack(0)
    front.responses()
    front.clock.advance(5)
    assert front.statuses() == [480]


def test_decline_is_603(front: Front) -> None:
    """call_event declined from the device: 603 Decline."""
    front.hub.online.add("phone")
    front.send(request("INVITE"))
    front.hub.ack(0)
    call_id = front.hub.sent[0][1].call_id  # type: ignore[union-attr]
    front.dispatcher.on_call_event("phone", call_id, "declined")
    assert front.statuses() == [100, 180, 603]


def test_cancel_without_reason_is_missed_call(front: Front) -> None:
    """CANCEL without Reason: remote_ended, and a missed-call alert when offline."""
    front.send(request("INVITE"))
    front.apns.answer(0, Delivered("x"))
    front.send(request("CANCEL"))
    assert sorted(front.statuses()) == [100, 180, 200, 487]
    assert [p.push_type.value for p, _ in front.apns.pushes] == ["voip", "alert"]


def test_cancel_with_unreadable_reason_still_cancels(front: Front) -> None:
    """A Reason that does not parse is left out, the readable one still
    counts; a CANCEL is never refused (nor the call left ringing) over it."""
    front.hub.online.add("phone")
    front.send(request("INVITE"))
    front.hub.ack(0)
    assert front.statuses() == [100, 180]
    front.send(request("CANCEL", headers="Reason: SIP;cause=abc, SIP;cause=603\r\n"))
    assert sorted(front.statuses()) == [200, 487]
    cancel = front.hub.sent[1][1]
    assert isinstance(cancel, CallCancelFrame)
    assert cancel.reason == "declined_elsewhere"
    front.send(request("INVITE", branch="z9hG4bK-2", call_id="c2"))
    front.hub.ack(2)
    front.send(
        request(
            "CANCEL",
            branch="z9hG4bK-2",
            call_id="c2",
            headers='Reason: SIP;cause=200;text="open\r\n',
        )
    )
    assert sorted(front.statuses()) == [100, 180, 200, 487]
    cancel = front.hub.sent[3][1]
    assert isinstance(cancel, CallCancelFrame)
    assert cancel.reason == "remote_ended"


def test_unreadable_p_asserted_identity_rings_as_from(front: Front) -> None:
    """A broken P-Asserted-Identity is left out: the caller is From's."""
    front.hub.online.add("phone")
    with capturedLogs() as events:
        front.send(request("INVITE", headers="P-Asserted-Identity: Bob <sip:b@x\r\n"))
    frame = front.hub.sent[0][1]
    assert isinstance(frame, CallFrame)
    assert (frame.caller.handle, frame.caller.display_name) == ("+4930123", "Alice")
    assert front.statuses() == [100]
    assert [e for e in events if "log_failure" in e] == []


def test_every_invite_response_after_100_has_push_status(front: Front) -> None:
    """calls.md: also on 420 and on the 400 for an INVITE that does not parse."""
    front.send(request("INVITE", headers="Require: 100rel\r\n"))
    assert [(r.status, r.header("X-Push-Status")) for r in front.responses()] == [
        (100, None),
        (420, "none"),
    ]
    front.send(request("INVITE", branch="z9hG4bK-2", headers="Expires: -1\r\n"))
    [r] = front.responses()
    assert (r.status, r.reason, r.header("X-Push-Status")) == (
        400,
        "Bad Expires",
        "none",
    )
    front.send(request("OPTIONS", branch="z9hG4bK-3", headers="Expires: -1\r\n"))
    [r] = front.responses()
    assert (r.status, r.header("X-Push-Status")) == (400, None)


def test_cancel_for_unknown_transaction_481(front: Front) -> None:
    """CANCEL matching no INVITE: 481."""
    front.send(request("CANCEL", branch="z9hG4bK-nothing"))
    assert front.statuses() == [481]


def test_in_dialog_invite_481_and_tel_uri_416(front: Front) -> None:
    """We hold no dialogs: a To-tagged INVITE is 481; a tel: Request-URI is 416."""
    front.send(request("INVITE", to=f"<{AOR}>;tag=x"))
    assert front.statuses() == [100, 481]
    front.send(request("INVITE", "tel:+4930123", branch="z9hG4bK-2", call_id="c2"))
    assert front.statuses() == [100, 416]


def test_unknown_method_405_and_require_420(front: Front) -> None:
    """Unknown methods get 405 with Allow; unsupported Require gets 420."""
    front.send(request("SUBSCRIBE"))
    [r] = front.responses()
    assert (r.status, r.header("Allow") is not None) == (405, True)
    front.send(request("OPTIONS", branch="z9hG4bK-3", headers="Require: 100rel\r\n"))
    [r] = front.responses()
    assert (r.status, r.header("Unsupported")) == (420, "100rel")


def _register(contact: str, branch: str = "z9hG4bK-r", headers: str = "") -> bytes:
    return request(
        "REGISTER",
        "sip:example.com",
        to=f"<{AOR}>",
        branch=branch,
        call_id=branch,
        headers=f"Contact: {contact}\r\n{headers}",
    )


def test_register_apns_and_lpc_bindings(front: Front) -> None:
    """RFC 8599 contacts bind; 200 lists them; expires=0 removes one."""
    token = "ab" * 32
    front.send(
        _register(
            f"<sip:bob@10.0.0.1;pn-provider=apns;pn-prid={token};"
            "pn-param=TEAMID.com.x.voip>;expires=600"
        )
    )
    [r] = front.responses()
    assert r.status == 200
    contacts = r.header_values("Contact")
    assert any(f"pn-prid={token}" in c and "expires=600" in c for c in contacts)
    front.send(
        _register("<sip:bob@10.0.0.2;pn-provider=lpc;pn-prid=ipad-7>", "z9hG4bK-r2")
    )
    [r] = front.responses()
    assert len(r.header_values("Contact")) == 2
    assert {
        b.provider for b in front.registry.bindings_for_aor(AOR, front.clock.seconds())
    } == {
        "apns",
        "lpc",
    }
    front.send(
        _register(
            "<sip:bob@10.0.0.2;pn-provider=lpc;pn-prid=ipad-7>;expires=0", "z9hG4bK-r3"
        )
    )
    [r] = front.responses()
    assert [c for c in r.header_values("Contact") if "lpc" in c] == []
    front.send(_register("*", "z9hG4bK-r4", headers="Expires: 0\r\n"))
    assert front.statuses() == [200]
    assert front.registry.bindings_for_aor(AOR, front.clock.seconds()) == []


@pytest.mark.parametrize(
    ("contact", "source", "status"),
    [
        ("<sip:bob@10.0.0.1>", PEER, 403),  # no push parameters: we are no registrar
        ("<sip:bob@10.0.0.1;pn-provider=apns;pn-prid=zz>", PEER, 400),
        ("<sip:bob@10.0.0.1;pn-provider=fcm;pn-prid=abc>", PEER, 403),
        ("<sip:bob@10.0.0.1;pn-provider=lpc;pn-prid=ok-1>", ("192.0.2.9", 5060), 403),
    ],
)
def test_register_refusals(
    front: Front, contact: str, source: tuple[str, int], status: int
) -> None:
    """No pn- parameters, a bad token, another provider, or a foreign network."""
    front.send(_register(contact), source)
    [r] = (
        front.responses() if source == PEER else [parse_message(front.udp.sent[-1][0])]
    )
    assert isinstance(r, Response)
    assert r.status == status


def test_message_202_stored_and_framed(front: Front) -> None:
    """MESSAGE text/plain: stored (202) and sent as a message frame."""
    front.hub.online.add("phone")
    front.send(
        request("MESSAGE", headers="Content-Type: text/plain\r\n", body=b"hello")
    )
    assert front.statuses() == [202]
    [(_, frame, _)] = front.hub.sent
    assert isinstance(frame, MessageFrame)
    assert (frame.body, frame.sender.handle) == ("hello", "+4930123")
    assert len(front.registry.pending_messages("phone", front.clock.seconds())) == 1


@pytest.mark.parametrize(
    ("uri", "headers", "body", "status"),
    [
        (AOR, "Content-Type: application/json\r\n", b"{}", 415),
        (AOR, "", b"x", 415),
        (AOR, "Content-Type: text/plain\r\n", b"x" * 101, 413),
        ("sip:nobody@example.com", "Content-Type: text/plain\r\n", b"x", 404),
        (AOR, "Content-Type: text/plain\r\n", b"\xff\xfe", 400),
    ],
)
def test_message_refusals(
    front: Front, uri: str, headers: str, body: bytes, status: int
) -> None:
    """Wrong type 415, too long 413, unknown AOR 404, not UTF-8 400."""
    front.send(request("MESSAGE", uri, headers=headers, body=body))
    assert front.statuses() == [status]


def test_bad_request_gets_400_and_garbage_is_dropped(front: Front) -> None:
    """Missing Call-ID: 400 with a reason; unparseable junk: dropped and counted."""
    bad = request("OPTIONS").replace(b"Call-ID: c1@test\r\n", b"")
    front.send(bad)
    assert front.statuses() == []  # no Call-ID: no response can be routed
    assert front.server.stats["dropped"] == 1
    front.send(b"\x00\x01garbage\r\n\r\n")
    assert front.statuses() == []
    assert front.server.stats["dropped"] == 2
    mismatch = request("OPTIONS", branch="z9hG4bK-m").replace(
        b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE"
    )
    front.send(mismatch)
    [r] = front.responses()
    assert r.status == 400
    assert "CSeq" in r.reason
    assert front.server.stats["bad"] == 3
    front.send(request("OPTIONS", branch="z9hG4bK-ok"))
    assert front.statuses() == [200]  # still serving


def test_responses_from_peers_are_ignored(front: Front) -> None:
    """We are a UAS only: an incoming response is counted and dropped."""
    front.send(
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK-x\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert front.responses() == []
    assert front.server.stats["responses_ignored"] == 1


def test_shutdown_answers_pending_invites_503(front: Front) -> None:
    """Graceful stop: pending INVITEs get 503 + Retry-After, new ones too."""
    front.hub.online.add("phone")
    front.send(request("INVITE"))
    front.hub.ack(0)
    front.responses()
    front.app.shutdown(5)
    [r] = front.responses()
    assert (r.status, r.header("Retry-After"), r.header("X-Push-Status")) == (
        503,
        "5",
        "local;acked",
    )
    front.send(request("INVITE", branch="z9hG4bK-new", call_id="c9"))
    assert front.statuses() == [100, 503]


def test_header_line_without_colon_gets_400(front: Front) -> None:
    """Bad header syntax with a routable Via: 400 naming the problem (calls.md)."""
    bad = request("OPTIONS", branch="z9hG4bK-nocolon").replace(
        b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\nThis line has no colon\r\n"
    )
    front.send(bad)
    [r] = front.responses()
    assert (r.status, r.reason) == (400, "Header line without colon")
    assert r.header("Call-ID") == "c1@test"


def test_transaction_timers_share_one_lazy_reactor_timer(front: Front) -> None:
    """Final responses over UDP are resent on Timer G (at most TIMER_GAP_S
    late); an ACK stops them without cancelling the reactor timer, which
    later fires, finds nothing due and is gone once no transaction is left."""
    rejected = [f"z9hG4bK-{n}" for n in range(3)]
    for n, branch in enumerate(rejected):
        front.send(request("INVITE", "sip:nobody@example.com", branch=branch))
        front.clock.advance(0.001 * (n + 1))
    assert front.statuses() == [100, 404] * 3
    assert len(front.clock.getDelayedCalls()) == 1
    front.clock.advance(0.5)
    assert front.statuses() == [404, 404, 404]
    for branch in rejected:
        to = front.udp.sent[-1][0].split(b"\r\nTo: ")[1].split(b"\r\n")[0].decode()
        front.send(request("ACK", "sip:nobody@example.com", branch=branch, to=to))
    assert len(front.clock.getDelayedCalls()) == 1
    front.clock.advance(10)
    assert front.responses() == []
    assert len(front.server._layer) == 0  # Timer I ended them
    assert front.clock.getDelayedCalls() == []


def test_deadlines_inside_the_gap_do_not_re_arm_the_reactor_timer(
    front: Front,
) -> None:
    """Just after a firing, a deadline due within the gap waits for the armed
    timer instead of cancelling and re-creating it (T1 = 1 ms here, so Timer
    G of a second 404 falls inside the 10 ms gap)."""
    server = SipServer(front.clock, TransactionLayer(TimerSettings(t1=0.001)), 65_535)
    server.app = SipApplication(
        front.clock,
        dispatcher=front.dispatcher,
        messenger=front.app._messenger,
        registry=front.registry,
        settings=front.app.settings,
        responder=server,
    )
    server.udp = front.udp  # type: ignore[assignment]
    nobody = "sip:nobody@example.com"
    server.receive(request("INVITE", nobody, branch="z9hG4bK-a"), Transport.UDP, PEER)
    front.clock.advance(0.001)  # Timer G fired: the next firing waits for the gap
    (armed,) = front.clock.getDelayedCalls()
    server.receive(request("INVITE", nobody, branch="z9hG4bK-b"), Transport.UDP, PEER)
    assert front.clock.getDelayedCalls() == [armed]
    assert front.statuses() == [100, 404, 404, 100, 404]
    front.clock.advance(0.01)
    assert front.statuses() == [404, 404]  # both resent at the gap's end


@attrs.define
class _RequestRecorder:
    """A ``RequestObserver`` that records, and raises when told to."""

    raises: bool = False
    heard: list[str] = attrs.field(factory=list)

    def sip_request(self, method: str) -> None:
        self.heard.append(method)
        if self.raises:
            raise RuntimeError("observer bug")


def test_request_observers_hear_new_requests_not_retransmissions(
    front: Front,
) -> None:
    """Observers hear each new request's method, retransmissions not; one that
    raises is logged and the request is still answered."""
    broken, recorder = _RequestRecorder(raises=True), _RequestRecorder()
    front.app.add_observer(broken)
    front.app.add_observer(recorder)
    with capturedLogs() as events:
        front.send(request("OPTIONS", "sip:gw@127.0.0.1"))
        front.send(request("OPTIONS", "sip:gw@127.0.0.1"))
        front.send(request("OPTIONS", "sip:gw@127.0.0.1", branch="z9hG4bK-2"))
    assert front.statuses() == [200, 200, 200]
    assert recorder.heard == broken.heard == ["OPTIONS", "OPTIONS"]
    failures = [e for e in events if "log_failure" in e]
    assert [e["what"] for e in failures] == ["sip_request"] * 2


def test_overload_pending_cap_refuses_new_invites_503(front: Front) -> None:
    """At ``max_pending_invites`` a new INVITE gets 503 Overloaded with
    Retry-After and starts no call; the ringing call is untouched, OPTIONS
    is served, a retransmission of the refused INVITE is absorbed, and once
    the ringing call ends INVITEs are taken again."""
    front.app.overload = OverloadGuard(
        OverloadSettings(max_pending_invites=1, retry_after_s=7)
    )
    front.hub.online.add("phone")
    front.send(request("INVITE"))
    front.hub.ack(0)
    assert front.statuses() == [100, 180]
    refused = request("INVITE", branch="z9hG4bK-2", call_id="c2@test")
    front.send(refused)
    r100, r503 = front.responses()
    assert (r100.status, r503.status, r503.reason) == (100, 503, "Overloaded")
    assert (r503.header("Retry-After"), r503.header("X-Push-Status")) == ("7", "none")
    assert len(front.hub.sent) == 1  # no frame for the refused call
    assert front.dispatcher.active_count == 1
    front.send(refused)  # retransmitted: the transaction answers, no new count
    assert front.statuses() == [503]
    assert front.app.overload.refused == {"pending": 1, "lag": 0}
    front.send(request("OPTIONS", branch="z9hG4bK-o", call_id="o@test"))
    assert front.statuses() == [200]
    front.send(request("CANCEL"))
    assert sorted(front.statuses()) == [200, 487]
    front.send(request("INVITE", branch="z9hG4bK-3", call_id="c3@test"))
    assert front.statuses() == [100]
    assert front.dispatcher.active_count == 1  # the new call; the cancelled one ended


def test_overload_reactor_lag_sheds_until_it_catches_up(front: Front) -> None:
    """The lag monitor on the same clock: one timer firing 400 ms late is a
    stall, two in a row, the second no earlier, start shedding (warned
    once), a punctual one ends it (logged), and only new INVITEs were
    refused."""
    guard = OverloadGuard(OverloadSettings(lag_ms=250))
    front.app.overload = guard
    monitor = LagMonitor(front.clock, guard)
    monitor.start()
    front.clock.advance(0.1)
    assert (guard.lag_s, guard.lagging) == (0.0, False)
    with capturedLogs() as events:
        front.clock.advance(0.5)  # the reactor was busy: due at +0.1, ran at +0.5
        assert guard.lag_s == pytest.approx(0.4) and not guard.lagging
        front.clock.advance(0.1)
        assert not guard.lagging  # punctual again: it was one stall
        front.clock.advance(0.4)
        assert not guard.lagging  # 300 ms late: one sample
        front.clock.advance(0.5)  # 400 ms late, the second in a row
    assert guard.lagging and guard.lag_s == pytest.approx(0.4)
    assert [e["log_level"].name for e in events] == ["warn"]
    front.send(request("INVITE"))
    assert [(r.status, r.reason) for r in front.responses()] == [
        (100, "Trying"),
        (503, "Overloaded"),
    ]
    front.send(request("OPTIONS", branch="z9hG4bK-o", call_id="o@test"))
    assert front.statuses() == [200]
    with capturedLogs() as events:
        front.clock.advance(0.25)  # 150 ms late: over half the threshold
        assert guard.lagging
        front.clock.advance(0.1)
    assert not guard.lagging
    assert [e["log_level"].name for e in events] == ["info"]
    front.hub.online.add("phone")
    front.send(request("INVITE", branch="z9hG4bK-2", call_id="c2@test"))
    assert front.statuses() == [100]
    assert len(front.hub.sent) == 1
    assert guard.refused == {"pending": 0, "lag": 1}
    monitor.stop()
    assert all(c.func != monitor._tick for c in front.clock.getDelayedCalls())


def test_overload_lets_a_shrinking_backlog_through_until_twice_the_lag() -> None:
    """A stall leaves a backlog the CPU works off: waits over ``lag_ms`` that
    shrink sample by sample refuse nothing, their calls succeed; waits over
    twice ``lag_ms`` (T1 by default) shed on two samples, shrinking or not."""
    guard = OverloadGuard(OverloadSettings(lag_ms=250))
    for wait, draining in (
        (0.45, False),  # one sample: could be a stall
        (0.4, True),
        (0.35, True),
        (0.3, True),
        (0.26, True),
        (0.2, False),  # under lag_ms: worked off
        (0.1, False),
    ):
        guard.queued(wait)
        assert guard.sample(0.0) is None
        assert guard.draining is draining
        assert guard.refusal(0) is None
    assert guard.backlogs_absorbed == 1
    assert guard.sample(0.6) is None  # a stall: one sample
    assert guard.sample(0.55) is True  # shrinking, but past twice lag_ms
    assert guard.refusal(0) == "lag"
    assert guard.sample(0.1) is False
    # Shrinking at first, then growing: overload, and not counted as absorbed.
    assert [guard.sample(lag) for lag in (0.0, 0.3, 0.28, 0.29)] == [
        None,
        None,
        None,
        True,
    ]
    assert not guard.draining
    assert guard.sample(0.0) is False
    assert guard.backlogs_absorbed == 1
    assert guard.refused == {"pending": 0, "lag": 1}


def test_overload_monitor_logs_a_shrinking_backlog_once(front: Front) -> None:
    """Near capacity is worth an operator's note: the monitor logs when a
    backlog over the threshold is being worked off, once per backlog."""
    guard = OverloadGuard(OverloadSettings(lag_ms=250))
    monitor = LagMonitor(front.clock, guard)
    monitor.start()
    with capturedLogs() as events:
        for wait in (0.4, 0.35, 0.3, 0.1):
            guard.queued(wait)
            front.clock.advance(0.1)
    monitor.stop()
    assert [(e["log_level"].name, round(e["queued_ms"])) for e in events] == [
        ("info", 350)
    ]
    assert "shrinking" in events[0]["log_format"]
    assert (guard.backlogs_absorbed, guard.refused["lag"]) == (1, 0)


def test_sip_service_runs_the_lag_monitor_while_started(front: Front) -> None:
    """The service starts sampling with the listeners and stops on stop."""
    monitor = LagMonitor(front.clock, front.app.overload)
    service = SipService(front.server, front.app, monitor)

    def sampling() -> bool:
        return any(c.func == monitor._tick for c in front.clock.getDelayedCalls())

    service.startService()
    assert sampling()
    front.clock.advance(0.1)
    assert sampling()
    service.stopService()
    assert not sampling()


def test_overload_lag_zero_turns_lag_shedding_off(front: Front) -> None:
    """``overload_lag_ms = 0``: no sampling timer, any lag is only recorded."""
    guard = OverloadGuard(OverloadSettings(lag_ms=0))
    assert not guard.watches_lag  # the gateway then asks for no UDP stamps
    assert OverloadGuard(OverloadSettings(lag_ms=1)).watches_lag
    monitor = LagMonitor(front.clock, guard)
    monitor.start()
    assert front.clock.getDelayedCalls() == []
    assert guard.sample(10.0) is None
    assert (guard.lagging, guard.lag_s, guard.refusal(0)) == (False, 10.0, None)


def test_overload_udp_queue_wait_sheds_while_the_reactor_is_punctual(
    front: Front,
) -> None:
    """Timers fire on time but datagrams sat 300 ms in the kernel: two such
    samples in a row start shedding; each sample takes the longest wait
    since the one before and starts afresh, so a drained queue ends it."""
    guard = OverloadGuard(OverloadSettings(lag_ms=250))
    front.app.overload = guard
    monitor = LagMonitor(front.clock, guard)
    monitor.start()
    guard.queued(0.05)
    guard.queued(0.3)
    guard.queued(0.1)
    with capturedLogs() as events:
        front.clock.advance(0.1)
        assert (guard.lag_s, guard.queued_s, guard.delay_s) == (0.0, 0.3, 0.3)
        assert not guard.lagging  # one sample: could be a stall
        front.clock.advance(0.1)  # no datagram read since: the queue is empty
        assert (guard.queued_s, guard.lagging) == (0.0, False)
        guard.queued(0.3)
        front.clock.advance(0.1)
        guard.queued(0.26)
        front.clock.advance(0.1)
        assert not guard.lagging  # two over, but shrinking: it is catching up
        guard.queued(0.27)
        front.clock.advance(0.1)
        assert guard.lagging and guard.delay_s == pytest.approx(0.27)
    assert [(e["log_level"].name, round(e["queued_ms"])) for e in events] == [
        ("info", 260),  # shrinking: let through
        ("warn", 270),
    ]
    front.send(request("INVITE"))
    assert [(r.status, r.reason) for r in front.responses()] == [
        (100, "Trying"),
        (503, "Overloaded"),
    ]
    guard.queued(0.2)  # over half the threshold: still shedding
    front.clock.advance(0.1)
    assert guard.lagging
    guard.queued(0.01)
    front.clock.advance(0.1)
    assert not guard.lagging
    monitor.stop()
