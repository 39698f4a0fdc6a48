"""sipp as the SIP core against the assembled gateway, over UDP and TCP.

Each case runs a sipp scenario from ``scenarios/`` as a UAC, with LPP/1
devices on the local-push side and a fake APNs (HTTP/2 over TLS) behind the
gateway, and asserts the status codes, the ``X-Push-Status`` values and what
the devices and APNs saw (calls.md "Requests", "Delivery order").
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Generator
from typing import Any

import jwt
import pytest
import pytest_twisted
from sipp_helpers import (
    BUNDLE,
    KEY_ID,
    TEAM_ID,
    Apns,
    AutoDevice,
    Sipp,
    SippResult,
    offline_device,
)
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from gateway.app import Gateway

pytestmark = [pytest.mark.sipp, pytest.mark.integration]

TRANSPORTS = ["udp", "tcp"]
BOB = "sip:bob@example.com"
VOIP_TOKEN = "aa" * 32
ALERT_TOKEN = "bb" * 32
APNS_HELLO = {
    "voip_token": VOIP_TOKEN,
    "alert_token": ALERT_TOKEN,
    "topic": BUNDLE,
    "apns_env": "production",
}

Connect = Callable[..., Deferred[AutoDevice]]


def _push_status(result: SippResult, status: int) -> list[str]:
    value = result.response(status, "INVITE").header("X-Push-Status")
    return [entry.strip() for entry in value.split(",")]


def _ok(result: SippResult) -> None:
    assert result.exit_code == 0, result.describe()


def _quiet_period() -> Deferred[None]:
    """A bounded wait before asserting that something did NOT happen."""
    return deferLater(reactor, 0.5, lambda: None)  # type: ignore[arg-type]


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def sipp(sipp_for: Callable[[str], Sipp], transport: str) -> Sipp:
    return sipp_for(transport)


@pytest_twisted.inlineCallbacks
def test_ring_timeout_480_cancels_unanswered_and_sends_missed_alert(
    gateway: Gateway, apns: Apns, connect_device: Connect, sipp: Sipp, transport: str
) -> Generator[Deferred[Any], Any, None]:
    """Expires caps the ring timeout: 100, 180, 480; the device with a session
    gets call_cancel 'unanswered', the one without a missed-call alert push."""
    phone = yield connect_device("phone-1", BOB)
    yield offline_device(connect_device, "ipad-1", BOB, **APNS_HELLO)

    result = yield sipp.run("invite_ring_timeout.xml", transport, keys={"ring_s": "2"})

    _ok(result)
    assert result.statuses("INVITE") == [100, 180, 480]
    ringing = _push_status(result, 180)
    assert "local;acked" in ringing or "apns;accepted" in ringing
    assert sorted(_push_status(result, 480)) == ["apns;accepted", "local;acked"]
    assert result.response(480, "INVITE").header("Reason") == ""
    call = phone.of_type("call")[0]
    cancel = yield phone.wait_for("call_cancel")
    assert (cancel["call_id"], cancel["reason"]) == (call["call_id"], "unanswered")
    assert call["caller"] == {"handle": "+4930123", "display_name": "Alice"}
    yield apns.fake.wait_count(2)
    voip, alert = apns.fake.pushes
    assert (voip.headers["apns-push-type"], voip.token) == ("voip", VOIP_TOKEN)
    assert (alert.headers["apns-push-type"], alert.token) == ("alert", ALERT_TOKEN)
    assert alert.headers["apns-topic"] == BUNDLE
    assert alert.payload["callUUID"] == call["call_id"]
    assert alert.payload["aps"]["alert"] == {
        "loc-key": "MISSED_CALL",
        "loc-args": ["Alice"],
    }


@pytest.mark.parametrize(
    ("scenario", "reason", "missed_alert"),
    [
        ("invite_cancel_answered.xml", "answered_elsewhere", False),
        ("invite_cancel.xml", "remote_ended", True),
    ],
)
@pytest_twisted.inlineCallbacks
def test_cancel_487_reason_and_missed_alert(
    gateway: Gateway,
    apns: Apns,
    connect_device: Connect,
    sipp: Sipp,
    transport: str,
    scenario: str,
    reason: str,
    missed_alert: bool,
) -> Generator[Deferred[Any], Any, None]:
    """CANCEL: 200, then 487 to the INVITE; devices get call_cancel with the
    RFC 3326 reason mapped; only a remote hang-up (no Reason) is a missed call,
    alerted by push to the device without a session."""
    yield offline_device(connect_device, "ipad-1", BOB, **APNS_HELLO)
    phone = yield connect_device("phone-1", BOB)

    # The call rings for 1 s before the CANCEL (sipp -d): both devices have
    # been told of it by then (the 487's X-Push-Status shows it).
    result = yield sipp.run(scenario, transport, extra=("-d", "1000"))

    _ok(result)
    assert result.statuses("INVITE") == [100, 180, 487]
    assert result.statuses("CANCEL") == [200]
    assert sorted(_push_status(result, 487)) == ["apns;accepted", "local;acked"]
    call = phone.of_type("call")[0]
    cancel = yield phone.wait_for("call_cancel")
    assert (cancel["call_id"], cancel["reason"]) == (call["call_id"], reason)
    if missed_alert:
        yield apns.fake.wait_count(2)
        alert = apns.fake.pushes[1]
        assert (alert.headers["apns-push-type"], alert.token) == (
            "alert",
            ALERT_TOKEN,
        )
        assert alert.payload["callUUID"] == call["call_id"]
    else:
        yield _quiet_period()
    assert [p.headers["apns-push-type"] for p in apns.fake.pushes] == (
        ["voip", "alert"] if missed_alert else ["voip"]
    )


@pytest_twisted.inlineCallbacks
def test_device_declines_603(
    gateway: Gateway, apns: Apns, connect_device: Connect, sipp: Sipp, transport: str
) -> Generator[Deferred[Any], Any, None]:
    """The only device acks and sends call_event declined: 100, 180, 603."""
    phone = yield connect_device("phone-1", BOB)
    phone.on_call = lambda call: phone.send(
        {"type": "call_event", "call_id": call["call_id"], "event": "declined"}
    )

    result = yield sipp.run("invite_declined.xml", transport)

    _ok(result)
    assert result.statuses("INVITE") == [100, 180, 603]
    assert _push_status(result, 180) == ["local;acked"]
    assert _push_status(result, 603) == ["local;acked"]
    yield _quiet_period()
    assert [f["type"] for f in phone.frames if f["type"] != "welcome"] == ["call"]
    assert apns.fake.pushes == []


@pytest_twisted.inlineCallbacks
def test_offline_device_rings_by_voip_push(
    gateway: Gateway, apns: Apns, connect_device: Connect, sipp: Sipp, transport: str
) -> Generator[Deferred[Any], Any, None]:
    """No session: an APNs VoIP push, 180 'apns;accepted'; the push carries
    the headers and payload calls.md gives (caller from P-Asserted-Identity,
    X- headers), signed with an ES256 provider token."""
    yield offline_device(connect_device, "ipad-1", BOB, **APNS_HELLO)

    result = yield sipp.run("invite_cancel_answered.xml", transport)

    _ok(result)
    assert result.statuses("INVITE") == [100, 180, 487]
    assert _push_status(result, 180) == ["apns;accepted"]
    assert _push_status(result, 487) == ["apns;accepted"]
    [push] = apns.fake.pushes
    assert push.path == f"/3/device/{VOIP_TOKEN}"
    headers = push.headers
    assert headers["apns-push-type"] == "voip"
    assert headers["apns-topic"] == f"{BUNDLE}.voip"
    assert headers["apns-priority"] == "10"
    assert headers["apns-expiration"] == "0"
    assert str(uuid.UUID(headers["apns-id"])) == headers["apns-id"].lower()
    assert "apns-collapse-id" not in headers
    scheme, _, token = headers["authorization"].partition(" ")
    assert scheme == "bearer"
    header = jwt.get_unverified_header(token)
    assert (header["alg"], header["kid"]) == ("ES256", KEY_ID)
    claims = jwt.decode(token, apns.public_key, algorithms=["ES256"])
    assert claims["iss"] == TEAM_ID
    payload = push.payload
    assert payload == {
        "aps": {},
        "callUUID": payload["callUUID"],
        "handle": "+4930123",
        "display_name": "Alice",
        "video": False,
        "to": BOB,
        "headers": {"X-Customer-Id": "42"},
    }
    uuid.UUID(payload["callUUID"])


@pytest_twisted.inlineCallbacks
def test_unknown_aor_404(
    gateway: Gateway, apns: Apns, sipp: Sipp, transport: str
) -> Generator[Deferred[Any], Any, None]:
    """No device for the AOR: 404 with X-Push-Status none, nothing pushed."""
    result = yield sipp.run("invite_unknown.xml", transport, service="nobody")

    _ok(result)
    assert result.statuses("INVITE")[-1] == 404
    assert set(result.statuses("INVITE")) <= {100, 404}
    assert _push_status(result, 404) == ["none"]
    assert apns.fake.pushes == []


@pytest_twisted.inlineCallbacks
def test_options_200_with_allow_and_accept(
    gateway: Gateway, sipp: Sipp, transport: str
) -> Generator[Deferred[Any], Any, None]:
    """OPTIONS (the core's health check): 200 with Allow and Accept."""
    result = yield sipp.run("options.xml", transport)

    _ok(result)
    ok = result.response(200, "OPTIONS")
    allow = {m.strip() for m in ok.header("Allow").split(",")}
    assert allow == {"INVITE", "ACK", "CANCEL", "OPTIONS", "REGISTER", "MESSAGE"}
    assert "text/plain" in ok.header("Accept")


@pytest_twisted.inlineCallbacks
def test_register_rfc8599_bindings(
    gateway: Gateway, apns: Apns, sipp: Sipp, transport: str
) -> Generator[Deferred[Any], Any, None]:
    """REGISTER binds an APNs token (pn-provider=apns) and a local-push device
    (lpc); without pn- parameters 403; expires=0 removes the token binding;
    each 200 lists the bindings left."""
    result = yield sipp.run(
        "register.xml",
        transport,
        service="carol",
        keys={
            "voip_token": VOIP_TOKEN,
            "device_id": "carol-phone",
            "team": TEAM_ID,
            "bundle": BUNDLE,
        },
    )

    _ok(result)
    assert result.statuses("REGISTER") == [200, 200, 403, 200]
    oks = [m for m in result.received if m.status == 200]
    contacts = [sorted(c.split(";expires=")[0] for c in m.all("Contact")) for m in oks]
    apns_contact = (
        f"<sip:carol@example.com;pn-provider=apns;pn-prid={VOIP_TOKEN}"
        f";pn-param={TEAM_ID}.{BUNDLE}.voip>"
    )
    lpc_contact = "<sip:carol@example.com;pn-provider=lpc;pn-prid=carol-phone>"
    assert contacts == [[apns_contact], [apns_contact, lpc_contact], [lpc_contact]]
    assert gateway.registry is not None
    now = reactor.seconds()  # type: ignore[attr-defined]
    bindings = gateway.registry.bindings_for_aor("sip:carol@example.com", now)
    assert [(b.provider, b.prid) for b in bindings] == [("lpc", "carol-phone")]
    assert 590 <= bindings[0].expires_at - now <= 600


@pytest_twisted.inlineCallbacks
def test_message_202_delivered_415_404(
    gateway: Gateway, apns: Apns, connect_device: Connect, sipp: Sipp, transport: str
) -> Generator[Deferred[Any], Any, None]:
    """MESSAGE text/plain: 202 and the device gets a message frame; another
    content type 415; an unknown AOR 404."""
    phone = yield connect_device("phone-1", BOB)

    result = yield sipp.run("message.xml", transport)

    _ok(result)
    assert result.statuses("MESSAGE") == [202, 415, 404]
    message = yield phone.wait_for("message")
    assert message["body"].strip() == "Hello from sipp"
    assert message["from"] == {"handle": "+4930123", "display_name": "Alice"}
    yield _quiet_period()
    assert len(phone.of_type("message")) == 1
