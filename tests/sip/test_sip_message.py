"""Parser, accessors, URI grammar and response building (RFC 3261)."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.sip import (
    AbsoluteUri,
    Request,
    Response,
    SipParseError,
    SipUri,
    build_error_response,
    build_response,
    parse_message,
    parse_sip_uri,
    parse_uri,
    parse_via,
    split_list,
)

INVITE = (
    b"INVITE sip:Bob@Example.COM;transport=udp SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Bob <sip:bob@example.com>\r\n"
    b'From: "Alice \\"A\\" Smith" <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Timestamp: 54\r\n"
    b"Contact: <sip:alice@192.0.2.10:5070>\r\n"
    b'P-Asserted-Identity: "Alice" <sip:+4930123@example.com>, <tel:+4930123>\r\n'
    b"X-Tenant: acme\r\n"
    b"x-trace: a, b\r\n"
    b"Date: Sat, 13 Nov 2010 23:29:00 GMT\r\n"
    b'WWW-Authenticate: Digest realm="a", nonce="b"\r\n'
    b"Expires: 30\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"v=0\r\n"
)

REGISTER = (
    b"REGISTER sip:example.com SIP/2.0\r\n"
    b"v: SIP/2.0/TLS [2001:db8::1]:5061;branch=z9hG4bKreg1\r\n"
    b"t: <sip:bob@example.com>\r\n"
    b"f: <sip:bob@example.com>;tag=r1\r\n"
    b"i: reg1@example.com\r\n"
    b"CSeq: 7 REGISTER\r\n"
    b"m: <sip:bob@[2001:db8::1]:5061;transport=tls;pn-provider=apns"
    b";pn-prid=00fc13adff78512;pn-param=ABCD1234.com.example.app.voip>"
    b";expires=600, <sip:bob@192.0.2.7>;expires=0\r\n"
    b"l: 0\r\n"
    b"\r\n"
)


def _req(data: bytes) -> Request:
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


def test_typed_core_headers() -> None:
    """Via, From, To, Call-ID, CSeq, Max-Forwards and Expires are typed."""
    r = _req(INVITE)
    via = r.top_via
    assert (via.transport, via.host, via.port) == ("UDP", "192.0.2.10", 5070)
    assert via.branch == "z9hG4bK776asdhds"
    assert via.wants_rport and via.rport is None
    assert r.from_.display_name == 'Alice "A" Smith'
    assert r.from_.tag == "1928301774"
    assert r.to.tag is None
    assert r.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert (r.cseq.number, r.cseq.method) == (314159, "INVITE")
    assert r.max_forwards == 70
    assert r.expires == 30
    assert r.body == b"v=0\r"  # Content-Length 4 cuts the datagram


def test_request_uri_to_aor() -> None:
    """The Request-URI becomes the lower-cased, parameter-free AOR."""
    r = _req(INVITE)
    assert r.sip_uri is not None
    assert r.sip_uri.param("transport") == "udp"
    assert r.aor == "sip:bob@example.com"


def test_headers_iterate_in_order_with_x_headers_unsplit() -> None:
    """Iteration yields every header as sent; X- headers keep their spelling."""
    r = _req(INVITE)
    names = [h.name for h in r]
    assert names[:3] == ["Via", "Max-Forwards", "To"]
    assert [(h.name, h.value) for h in r.x_headers()] == [
        ("X-Tenant", "acme"),
        ("x-trace", "a, b"),
    ]
    assert r.header_values("x-trace") == ["a, b"]


def test_comma_headers_never_split_unless_list() -> None:
    """Date and WWW-Authenticate keep their commas; list headers split."""
    r = _req(INVITE)
    assert r.header_values("Date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]
    assert r.header_values("www-authenticate") == ['Digest realm="a", nonce="b"']
    pai = r.p_asserted_identity()
    assert [str(p.uri) for p in pai] == ["sip:+4930123@example.com", "tel:+4930123"]
    assert pai[0].display_name == "Alice"


def test_compact_forms_and_ipv6() -> None:
    """v/t/f/i/m/l compact names map to the long ones; IPv6 refs parse."""
    r = _req(REGISTER)
    assert r.top_via.host == "2001:db8::1"
    assert r.top_via.port == 5061
    assert str(r.top_via).startswith("SIP/2.0/TLS [2001:db8::1]:5061")
    assert r.header("Call-ID") == "reg1@example.com"
    assert [h.name for h in r][:4] == ["Via", "To", "From", "Call-ID"]


def test_contact_push_params_and_expires() -> None:
    """RFC 8599 pn- parameters and per-contact expires are read."""
    r = _req(REGISTER)
    first, second = r.contact
    assert first.expires == 600
    assert second.expires == 0
    uri = first.sip_uri
    assert uri is not None
    push = uri.push_params
    assert push is not None
    assert (push.provider, push.prid) == ("apns", "00fc13adff78512")
    assert push.param == "ABCD1234.com.example.app.voip"
    assert second.sip_uri is not None and second.sip_uri.push_params is None
    assert not r.contact_star


def test_contact_star() -> None:
    """'Contact: *' is flagged, and may not be mixed with contacts."""
    star = REGISTER.replace(
        REGISTER[REGISTER.index(b"m: ") : REGISTER.index(b"l: 0")],
        b"Contact: *\r\nExpires: 0\r\n",
    )
    r = _req(star)
    assert r.contact_star and r.contact == () and r.expires == 0
    mixed = star.replace(b"Contact: *", b"Contact: *, <sip:a@b>")
    with pytest.raises(SipParseError):
        parse_message(mixed)


def test_reason_header() -> None:
    """RFC 3326 Reason: protocol, cause and quoted text, several values."""
    data = INVITE.replace(
        b"X-Tenant: acme\r\n",
        b'Reason: SIP ;cause=200 ;text="Call completed, elsewhere", '
        b'Q.850;cause=16;text="Terminated"\r\n',
    )
    first, second = _req(data).reasons()
    assert (first.protocol, first.cause) == ("SIP", 200)
    assert first.text == "Call completed, elsewhere"
    assert (second.protocol, second.cause, second.text) == ("Q.850", 16, "Terminated")
    assert str(first) == 'SIP;cause=200;text="Call completed, elsewhere"'


def test_unreadable_reason_and_identity_values_are_left_out() -> None:
    """Reason and P-Asserted-Identity are parsed when asked for; a bad value
    is skipped, the readable ones are kept."""
    data = INVITE.replace(
        b"X-Tenant: acme\r\n",
        b"Reason: SIP;cause=abc, SIP;cause=603\r\nReason: garbage\r\n"
        b"P-Asserted-Identity: Bob <sip:b@x\r\nP-Asserted-Identity: <tel:+4930999>\r\n",
    )
    request = _req(data)
    assert [(r.protocol, r.cause) for r in request.reasons()] == [
        ("SIP", 603),
        ("garbage", None),  # a token protocol is valid (RFC 3326)
    ]
    assert [str(a.uri) for a in request.p_asserted_identity()] == [
        "sip:+4930123@example.com",  # the two INVITE has already
        "tel:+4930123",
        "tel:+4930999",
    ]


def test_line_folding_everywhere() -> None:
    """LWS continuation lines join with a space, even in the CSeq number."""
    data = INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq:\r\n 314159\r\n\tINVITE")
    assert _req(data).cseq.number == 314159


def test_leading_crlf_ignored() -> None:
    """RFC 3261 7.5: CRLFs before the start line are skipped."""
    assert _req(b"\r\n\r\n" + INVITE).method == "INVITE"


def test_missing_content_length_takes_the_datagram() -> None:
    """Without Content-Length a datagram's body is the rest of it."""
    data = INVITE.replace(b"Content-Length: 4\r\n", b"")
    assert _req(data).body == b"v=0\r\n"


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        (b"Content-Length: 4", b"Content-Length: 40", "Content-Length larger"),
        (b"Content-Length: 4", b"Content-Length: x", "Bad Content-Length"),
        (b"Max-Forwards: 70", b"Max-Forwards: 256", "Max-Forwards"),
        (b"Expires: 30", b"Expires: 99999999999", "Expires"),
        (b"Call-ID: a84b", b"Call-ID: a 84b", "Call-ID"),
        (b"CSeq: 314159 INVITE", b"CSeq: 314159", "CSeq"),
        (b"CSeq: 314159 INVITE", b"CSeq: 2147483648 INVITE", "CSeq"),
        (
            b"Via: SIP/2.0/UDP 192.0.2.10:5070",
            b"Via: SIP/2.0/UDP 192.0.2.10:99999",
            "Via",
        ),
        (
            b"Via: SIP/2.0/UDP 192.0.2.10:5070;branch=z9",
            b"Via: SIP/2.0/UDP 192.0.2.10:5070;received=x;branch=z9",
            "received",
        ),
        (b"To: Bob <sip:bob@example.com>", b"To: Bob <sip:bob@exa mple.com>", "To"),
        (b"Content-Type: application/sdp", b"Content-Type: sdp", "Content-Type"),
        (b"X-Tenant: acme", b"X Tenant: acme", "header name"),
        (b"X-Tenant: acme", b"X-Tenant acme", "colon"),
        (b"X-Tenant: acme", b"X-Tenant: a\x01b", "Control character"),
        (b"X-Tenant: acme", b"X-Tenant: a\rb", "Bare CR"),
        (b"X-Tenant: acme", b"X-Tenant: \xff", "UTF-8"),
        (b"SIP/2.0\r\n", b"SIP/2.0 extra\r\n", "request line"),
        (b"INVITE sip", b"INV@TE sip", "method"),
        (b"SIP/2.0\r\n", b"SIP/20\r\n", "version"),
    ],
)
def test_bad_requests(old: bytes, new: bytes, reason: str) -> None:
    """Broken syntax raises SipParseError with a reason saying what is wrong."""
    data = INVITE.replace(old, new, 1)
    assert data != INVITE
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert reason in info.value.reason
    assert info.value.status == 400


@pytest.mark.parametrize("name", [b"Via", b"From", b"To", b"Call-ID", b"CSeq"])
def test_missing_mandatory_header(name: bytes) -> None:
    """A request without Via/From/To/Call-ID/CSeq is a 400."""
    lines = INVITE.split(b"\r\n")
    data = b"\r\n".join(x for x in lines if not x.startswith(name + b":"))
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert "Missing" in info.value.reason


def test_no_empty_line_and_size_limit() -> None:
    """A message without its blank line, or over max_size, is refused."""
    with pytest.raises(SipParseError):
        parse_message(INVITE.split(b"\r\n\r\n")[0])
    with pytest.raises(SipParseError) as info:
        parse_message(INVITE, max_size=100)
    assert "too large" in info.value.reason
    response = build_error_response(info.value, to_tag="x")
    assert response is not None and response.status == 400


def test_response_parse() -> None:
    """A response's status, reason, Via and To tag are read."""
    data = (
        b"SIP/2.0 486 Busy Here\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\n"
        b"Call-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    resp = parse_message(data)
    assert isinstance(resp, Response)
    assert (resp.status, resp.reason, resp.to_tag) == (486, "Busy Here", "2")
    assert resp.cseq is not None and resp.cseq.method == "INVITE"


def test_build_response_rfc3261_8_2_6() -> None:
    """Via/From/To/Call-ID/CSeq copied, To tag added, Content-Length set."""
    r = _req(INVITE)
    resp = build_response(
        r,
        480,
        to_tag="gw42",
        headers=[("Reason", 'SIP;cause=480;text="Push failed"')],
    )
    wire = resp.to_bytes()
    assert wire == (
        b"SIP/2.0 480 Temporarily Unavailable\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK776asdhds;rport\r\n"
        b'From: "Alice \\"A\\" Smith" <sip:alice@atlanta.example.com>'
        b";tag=1928301774\r\n"
        b"To: Bob <sip:bob@example.com>;tag=gw42\r\n"
        b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
        b"CSeq: 314159 INVITE\r\n"
        b'Reason: SIP;cause=480;text="Push failed"\r\n'
        b"Content-Length: 0\r\n\r\n"
    )
    assert resp.to_tag == "gw42"
    reparsed = parse_message(wire)
    assert isinstance(reparsed, Response) and reparsed.to_tag == "gw42"


def test_build_response_100_and_body() -> None:
    """100 Trying gets no To tag but the Timestamp; bodies set Content-Length."""
    r = _req(INVITE)
    trying = build_response(r, 100, to_tag="gw42").to_bytes()
    assert b"To: Bob <sip:bob@example.com>\r\n" in trying
    assert b"Timestamp: 54\r\n" in trying
    ok = build_response(
        r, 200, to_tag="t", body=b"hello", content_type="text/plain"
    ).to_bytes()
    assert ok.endswith(b"Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello")


def test_build_response_keeps_existing_to_tag() -> None:
    """A request already in a dialog keeps its To tag."""
    data = INVITE.replace(b"To: Bob <sip:bob@example.com>", b"To: <sip:b@c>;tag=old")
    wire = build_response(_req(data), 486, to_tag="new").to_bytes()
    assert b"To: <sip:b@c>;tag=old\r\n" in wire


def test_build_response_rejects_bad_status() -> None:
    """Status codes outside 100-699 are our bug."""
    with pytest.raises(ValueError, match="out of range"):
        build_response(_req(INVITE), 700)


def test_error_response_stamps_received() -> None:
    """A 400 for a broken request carries received/rport for routing."""
    data = INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: 314159 BYE")
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    resp = build_error_response(info.value, to_tag="t", source=("203.0.113.9", 40000))
    assert resp is not None
    assert resp.via[0].received == "203.0.113.9"
    assert resp.via[0].rport == 40000
    assert resp.reason == "CSeq method does not match the request"
    assert b"CSeq: 314159 BYE\r\n" in resp.to_bytes()


# --- URIs -------------------------------------------------------------------


def test_sip_uri_components() -> None:
    """User, password, host, port, params and headers, unescaped."""
    uri = parse_sip_uri(
        "sips:al%20ice:se%2Fcret@[2001:DB8::1]:5061;transport=tcp;lr;Maddr=x"
        "?subject=hi%20there&priority=urgent"
    )
    assert uri.scheme == "sips"
    assert (uri.user, uri.password) == ("al ice", "se/cret")
    assert (uri.host, uri.port) == ("2001:db8::1", 5061)
    assert uri.params == (("transport", "tcp"), ("lr", None), ("maddr", "x"))
    assert uri.headers == (("subject", "hi there"), ("priority", "urgent"))
    assert str(uri) == (
        "sips:al%20ice:se%2Fcret@[2001:db8::1]:5061;transport=tcp;lr;maddr=x"
        "?subject=hi%20there&priority=urgent"
    )


@pytest.mark.parametrize(
    "text",
    [
        "sip:",
        "sip:@example.com",
        "sip:user@",
        "sip:user@exa mple.com",
        "sip:user@example.com:99999",
        "sip:user@[::g]",
        "sip:a@b@c",
        "sip:user@example..com",
        "sip:us%2er@example.com;%zz",
        "sip:user@example.com;=x",
        "sip:user@example.com?",
        "<sip:user@example.com>",
    ],
)
def test_bad_sip_uris(text: str) -> None:
    """URIs that break RFC 3261 25.1 are refused."""
    with pytest.raises(SipParseError):
        parse_uri(text)


def test_other_schemes_and_aor() -> None:
    """tel: and friends are AbsoluteUri; AORs drop params and case."""
    tel = parse_uri("tel:+49-30-123;phone-context=example.com")
    assert isinstance(tel, AbsoluteUri) and tel.scheme == "tel"
    uri = parse_sip_uri("sip:Bob@Example.com:5070;transport=tcp")
    assert uri.aor == "sip:bob@example.com"
    assert SipUri(host="example.com").aor == "sip:example.com"


def test_via_and_split_list() -> None:
    """Via parameters, rport/received and quoted commas in lists."""
    via = parse_via(
        "SIP / 2.0 / udp  host.example.com : 5080 ; branch = z9hG4bKa ; rport=1"
    )
    assert (via.transport, via.host, via.port, via.rport) == (
        "UDP",
        "host.example.com",
        5080,
        1,
    )
    assert split_list('"a, b" <sip:x>, <sip:y;p=1,2>, c') == [
        '"a, b" <sip:x>',
        "<sip:y;p=1,2>",
        "c",
    ]
    with pytest.raises(SipParseError):
        split_list('"unterminated, x')


def test_response_cache_follows_the_request() -> None:
    """Responses of a copied request use the copy's values, not a stale cache."""
    r = _req(INVITE)
    build_response(r, 180, to_tag="t")
    copy = dataclasses.replace(r, call_id="other@example.com")
    wire = build_response(copy, 180, to_tag="t").to_bytes()
    assert b"Call-ID: other@example.com\r\n" in wire
    stamped = r.with_top_via(r.top_via.with_params(received="203.0.113.1"))
    assert b"received=203.0.113.1" in build_response(stamped, 180).to_bytes()
