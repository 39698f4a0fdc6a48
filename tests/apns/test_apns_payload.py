"""Payloads and request headers against calls.md ("APNs requests")."""

from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.apns import (
    ALERT_PAYLOAD_LIMIT,
    VOIP_PAYLOAD_LIMIT,
    ApnsNotification,
    Environment,
    PushType,
    alert_notification,
    expiration_at,
    message_payload,
    missed_call_payload,
    new_apns_id,
    request_headers,
    token_hint,
    topic_for,
    voip_notification,
    voip_payload,
)

TOKEN = "ab" * 32
CALL = "6f1c7e3a-1b2c-4d5e-8f90-a1b2c3d4e5f6"


def _voip(**kw: object) -> bytes:
    args: dict[str, object] = {
        "call_uuid": CALL,
        "handle": "+4930123",
        "display_name": "Alice",
        "video": False,
        "to": "sip:bob@example.com",
        "headers": {"X-Tenant": "acme"},
    }
    args.update(kw)
    return voip_payload(**args)  # type: ignore[arg-type]


def test_voip_payload_matches_calls_md_example() -> None:
    """Field order, names and compact separators are exactly the documented ones."""
    assert _voip() == (
        b'{"aps":{},"callUUID":"' + CALL.encode() + b'","handle":"+4930123",'
        b'"display_name":"Alice","video":false,"to":"sip:bob@example.com",'
        b'"headers":{"X-Tenant":"acme"}}'
    )


def test_voip_payload_fields() -> None:
    """Each field carries what the call gave, video as a JSON boolean."""
    data = json.loads(_voip(video=True, headers={}))
    assert data["aps"] == {}
    assert data["callUUID"] == CALL
    assert data["handle"] == "+4930123"
    assert data["display_name"] == "Alice"
    assert data["video"] is True
    assert data["to"] == "sip:bob@example.com"
    assert data["headers"] == {}


def test_voip_payload_is_raw_utf8_not_ascii_escaped() -> None:
    """Non-ASCII text is sent as UTF-8 bytes, not \\u escapes (smaller)."""
    raw = _voip(display_name="Jürgen 日本")
    assert "Jürgen 日本".encode() in raw
    assert b"\\u" not in raw


def test_voip_missing_display_name_is_empty_string() -> None:
    """A caller without a display name gets ``""``, keeping the field a string."""
    assert json.loads(_voip(display_name=None))["display_name"] == ""


def test_voip_long_display_name_cut_first_headers_kept() -> None:
    """An oversized name is cut to fit 5120 bytes; headers survive."""
    raw = _voip(display_name="A" * 6000)
    assert len(raw) == VOIP_PAYLOAD_LIMIT
    data = json.loads(raw)
    assert data["headers"] == {"X-Tenant": "acme"}
    assert data["display_name"] != "A" * 6000
    assert data["display_name"] == "A" * len(data["display_name"])


def test_voip_non_ascii_cut_is_utf8_safe() -> None:
    """A cut never splits a multi-byte character: the payload decodes strictly."""
    name = "€😀" * 3000
    raw = _voip(display_name=name)
    assert len(raw) <= VOIP_PAYLOAD_LIMIT
    kept = json.loads(raw.decode("utf-8", "strict"))["display_name"]
    assert name.startswith(kept)
    assert len(raw) > VOIP_PAYLOAD_LIMIT - 4  # cut no more than one character


def test_voip_escaping_counts_towards_the_limit() -> None:
    """Quotes and control characters expand in JSON; the real size is what counts."""
    raw = _voip(display_name='"\n' * 5000)
    assert len(raw) <= VOIP_PAYLOAD_LIMIT
    assert json.loads(raw)["display_name"].startswith('"\n')


def test_voip_exactly_at_limit_is_not_cut() -> None:
    """A payload of exactly 5120 bytes goes out whole; one more byte is cut."""
    base = len(_voip(display_name=""))
    raw = _voip(display_name="x" * (VOIP_PAYLOAD_LIMIT - base))
    assert len(raw) == VOIP_PAYLOAD_LIMIT
    assert json.loads(raw)["display_name"] == "x" * (VOIP_PAYLOAD_LIMIT - base)
    over = _voip(display_name="x" * (VOIP_PAYLOAD_LIMIT - base + 1))
    assert json.loads(over)["display_name"] == "x" * (VOIP_PAYLOAD_LIMIT - base)


def test_voip_headers_dropped_when_cutting_the_name_is_not_enough() -> None:
    """Headers too large even with an empty name are dropped; the name comes back."""
    headers = {f"X-H{i}": "v" * 100 for i in range(60)}
    raw = _voip(display_name="Alice", headers=headers)
    data = json.loads(raw)
    assert len(raw) <= VOIP_PAYLOAD_LIMIT
    assert data["headers"] == {}
    assert data["display_name"] == "Alice"
    assert data["handle"] == "+4930123"


def test_voip_absurd_handle_still_pushed() -> None:
    """Even a handle over the limit yields a pushable payload with the call id."""
    raw = _voip(handle="9" * 9000, display_name="Alice")
    data = json.loads(raw)
    assert len(raw) <= VOIP_PAYLOAD_LIMIT
    assert data["callUUID"] == CALL
    assert data["display_name"] == ""
    assert data["headers"] == {}


def test_voip_lone_surrogate_does_not_break_encoding() -> None:
    """Text decoded leniently upstream (lone surrogates) still serialises."""
    raw = _voip(display_name="bad\udc80name")
    assert json.loads(raw)["display_name"] == "bad?name"


@given(
    name=st.text(max_size=3000),
    headers=st.dictionaries(st.text(max_size=20), st.text(max_size=300), max_size=20),
)
def test_voip_always_fits_and_keeps_a_prefix(
    name: str, headers: dict[str, str]
) -> None:
    """For any text, the payload is valid UTF-8 JSON within the limit."""
    raw = _voip(display_name=name, headers=headers)
    assert len(raw) <= VOIP_PAYLOAD_LIMIT
    data = json.loads(raw.decode("utf-8"))
    clean = name.encode("utf-8", "replace").decode("utf-8")
    assert clean.startswith(data["display_name"])

    def fix(t: str) -> str:
        return t.encode("utf-8", "replace").decode("utf-8")

    assert data["headers"] in ({}, {fix(k): fix(v) for k, v in headers.items()})


def test_missed_call_with_name() -> None:
    """MISSED_CALL with the name as the only loc-arg, as calls.md shows."""
    raw = missed_call_payload(call_uuid=CALL, display_name="Alice")
    assert raw == (
        b'{"aps":{"alert":{"loc-key":"MISSED_CALL","loc-args":["Alice"]},'
        b'"sound":"default","thread-id":"missed-calls"},"callUUID":"'
        + CALL.encode()
        + b'"}'
    )


@pytest.mark.parametrize("name", [None, "", "   "])
def test_missed_call_without_name(name: str | None) -> None:
    """No (or blank) display name: MISSED_CALL_NO_NAME and no loc-args."""
    data = json.loads(missed_call_payload(call_uuid=CALL, display_name=name))
    assert data["aps"]["alert"] == {"loc-key": "MISSED_CALL_NO_NAME"}
    assert data["aps"]["sound"] == "default"
    assert data["aps"]["thread-id"] == "missed-calls"
    assert data["callUUID"] == CALL


def test_missed_call_long_name_fits_alert_limit() -> None:
    """A huge name is cut so the alert stays within 4096 bytes."""
    raw = missed_call_payload(call_uuid=CALL, display_name="ü" * 5000)
    assert len(raw) <= ALERT_PAYLOAD_LIMIT
    assert json.loads(raw)["aps"]["alert"]["loc-key"] == "MISSED_CALL"


def test_message_alert_fields() -> None:
    """INCOMING_MESSAGE with [display_name], the body, thread-id = the sender."""
    raw = message_payload(
        sender="sip:alice@example.com", display_name="Alice", body="hi there"
    )
    data = json.loads(raw)
    assert data == {
        "aps": {
            "alert": {
                "loc-key": "INCOMING_MESSAGE",
                "loc-args": ["Alice"],
                "body": "hi there",
            },
            "sound": "default",
            "thread-id": "sip:alice@example.com",
        }
    }
    assert b" " not in raw.replace(b"hi there", b"")


def test_message_alert_without_name_uses_sender() -> None:
    """With no display name the sender fills the loc-arg."""
    data = json.loads(message_payload(sender="+4930123", display_name=None, body="x"))
    assert data["aps"]["alert"]["loc-args"] == ["+4930123"]


def test_message_body_cut_to_4096_utf8_safe() -> None:
    """A long multi-byte body is cut at a character boundary to fit 4096 bytes."""
    body = "ß€😀" * 2000
    raw = message_payload(sender="sip:a@x", display_name="Alice", body=body)
    assert len(raw) <= ALERT_PAYLOAD_LIMIT
    assert len(raw) > ALERT_PAYLOAD_LIMIT - 4
    data = json.loads(raw.decode("utf-8", "strict"))
    assert body.startswith(data["aps"]["alert"]["body"])
    assert data["aps"]["alert"]["loc-args"] == ["Alice"]


def test_message_absurd_name_and_sender_still_fit() -> None:
    """Name and sender are cut after the body if they alone overflow."""
    raw = message_payload(sender="s" * 9000, display_name="n" * 9000, body="b" * 10)
    assert len(raw) <= ALERT_PAYLOAD_LIMIT
    assert json.loads(raw)["aps"]["alert"]["body"] == ""


@pytest.mark.parametrize(
    ("bundle", "push_type", "topic"),
    [
        ("com.example.phone", PushType.VOIP, "com.example.phone.voip"),
        ("com.example.phone", PushType.ALERT, "com.example.phone"),
        # A bundle id that really ends in .voip is kept as it is.
        ("com.example.phone.voip", PushType.VOIP, "com.example.phone.voip.voip"),
        ("com.example.phone.voip", PushType.ALERT, "com.example.phone.voip"),
    ],
)
def test_topic_for(bundle: str, push_type: PushType, topic: str) -> None:
    """VoIP topics are <bundle>.voip, alert topics the bundle id as given."""
    assert topic_for(bundle, push_type) == topic


def test_expiration_at() -> None:
    """0 stays 0 (deliver now or never); otherwise now plus the configured seconds."""
    assert expiration_at(1_700_000_000.7, 0) == 0
    assert expiration_at(1_700_000_000.7, 5) == 1_700_000_005


def _notification(
    push_type: PushType = PushType.VOIP, **kw: object
) -> ApnsNotification:
    args: dict[str, object] = {
        "device_token": TOKEN,
        "environment": Environment.PRODUCTION,
        "push_type": push_type,
        "topic": topic_for("com.example.phone", push_type),
        "payload": b"{}",
        "deadline": 30.0,
    }
    args.update(kw)
    return ApnsNotification(**args)  # type: ignore[arg-type]


def test_voip_request_headers() -> None:
    """VoIP: push type voip, .voip topic, priority 10, expiration 0, our apns-id."""
    n = _notification(apns_id="0b6e3c2e-53a4-4a42-9b1a-1d0c2a5b7e01")
    h = request_headers(n, "bearer JWT")
    assert h == {
        b"apns-push-type": [b"voip"],
        b"apns-topic": [b"com.example.phone.voip"],
        b"apns-priority": [b"10"],
        b"apns-expiration": [b"0"],
        b"apns-id": [b"0b6e3c2e-53a4-4a42-9b1a-1d0c2a5b7e01"],
        b"authorization": [b"bearer JWT"],
    }
    assert b"apns-collapse-id" not in h


def test_alert_request_headers_without_token_auth() -> None:
    """Alert: push type alert, bare topic, configured expiration, no auth header."""
    h = request_headers(_notification(PushType.ALERT, expiration=1_700_000_005), None)
    assert h[b"apns-push-type"] == [b"alert"]
    assert h[b"apns-topic"] == [b"com.example.phone"]
    assert h[b"apns-priority"] == [b"10"]
    assert h[b"apns-expiration"] == [b"1700000005"]
    assert b"authorization" not in h


def test_request_headers_expiration_override() -> None:
    """An explicit expiration is sent instead of the notification's own."""
    n = _notification(PushType.ALERT, expiration=None)
    assert request_headers(n, None)[b"apns-expiration"] == [b"0"]
    h = request_headers(n, None, expiration=1_700_000_009)
    assert h[b"apns-expiration"] == [b"1700000009"]
    n5 = _notification(PushType.ALERT, expiration=1_700_000_005)
    assert request_headers(n5, None)[b"apns-expiration"] == [b"1700000005"]


def test_apns_id_is_a_canonical_random_uuid() -> None:
    """apns-id is a version 4 UUID in canonical lower-case form."""
    for _ in range(100):
        apns_id = new_apns_id()
        parsed = uuid.UUID(apns_id)
        assert str(parsed) == apns_id
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)


def test_each_notification_gets_its_own_apns_id() -> None:
    """apns-id defaults to a fresh UUID per push."""
    a, b = _notification(), _notification()
    assert a.apns_id != b.apns_id
    assert len(a.apns_id) == 36


def test_device_token_normalised_and_validated() -> None:
    """Tokens are lower-cased hex; anything else (path tricks) is refused."""
    assert _notification(device_token=TOKEN.upper()).device_token == TOKEN
    for bad in ["", "xyz" * 20, "../../3/device/" + TOKEN, "ab" * 101]:
        with pytest.raises(ValueError, match="device token"):
            _notification(device_token=bad)
    with pytest.raises(ValueError, match="topic"):
        _notification(topic="bad topic\r\n")


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "not-a-uuid",
        "0b6e3c2e53a44a429b1a1d0c2a5b7e01",  # no hyphens
        "0b6e3c2e-53a4-4a42-9b1a-1d0c2a5b7e01\r\nx-evil: 1",  # header injection
        "0b6e3c2e-53a4-4a42-9b1a-1d0c2a5b7e0g",
    ],
)
def test_apns_id_must_be_a_canonical_uuid(bad: str) -> None:
    """The request headers are sent as built, so a caller's apns-id is checked:
    only the canonical UUID form APNs accepts gets in."""
    with pytest.raises(ValueError, match="apns-id"):
        _notification(apns_id=bad)
    upper = "0B6E3C2E-53A4-4A42-9B1A-1D0C2A5B7E01"
    assert _notification(apns_id=upper).apns_id == upper


@pytest.mark.parametrize("bad", [{"aps": {}}, '{"aps":{}}', [("a", "b")], None])
def test_payload_must_be_bytes(bad: object) -> None:
    """A payload that is not bytes is refused when the push is made; treq
    would otherwise send a dict or list form-encoded to APNs."""
    with pytest.raises(TypeError, match="payload"):
        _notification(payload=bad)


def test_repr_hides_token_and_payload() -> None:
    """Reprs (and so logs) show a token prefix and the payload size only."""
    r = repr(_notification(payload=b'{"display_name":"Alice"}'))
    assert TOKEN not in r
    assert token_hint(TOKEN) in r
    assert "Alice" not in r
    assert "<24 bytes>" in r


def test_notification_factories_pick_type_and_topic() -> None:
    """voip_notification/alert_notification set push type and topic per calls.md."""
    common = {
        "device_token": TOKEN,
        "environment": Environment.SANDBOX,
        "bundle_id": "com.example.phone",
        "payload": b"{}",
        "deadline": 30.0,
    }
    v = voip_notification(**common)  # type: ignore[arg-type]
    a = alert_notification(**common, expiration=99)  # type: ignore[arg-type]
    assert (v.push_type, v.topic, v.expiration) == (
        PushType.VOIP,
        "com.example.phone.voip",
        None,
    )
    assert (a.push_type, a.topic, a.expiration) == (
        PushType.ALERT,
        "com.example.phone",
        99,
    )
    assert v.environment is Environment.SANDBOX
    assert v.apns_id != a.apns_id


def test_public_names_are_the_private_objects() -> None:
    """gateway.apns re-exports every name in __all__ (klein's export test)."""
    import gateway.apns

    for name in gateway.apns.__all__:
        assert getattr(gateway.apns, name) is not None
