"""RFC 4475 torture tests: valid messages parse, invalid ones are refused."""

from __future__ import annotations

import pytest
import rfc4475_messages as m

from gateway.sip import (
    AbsoluteUri,
    Request,
    Response,
    SipParseError,
    Transport,
    build_error_response,
    parse_message,
    route_response,
)


def _request(data: bytes) -> Request:
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


@pytest.mark.parametrize("name", sorted(m.VALID))
def test_valid_messages_parse(name: str) -> None:
    """Every RFC 4475 3.1.1 message (and the valid 3.3 ones) parses."""
    parse_message(m.VALID[name])


@pytest.mark.parametrize("name", sorted(m.INVALID))
def test_invalid_messages_are_refused(name: str) -> None:
    """Every RFC 4475 3.1.2 message (and insuf/multi01/mcl01) raises."""
    with pytest.raises(SipParseError):
        parse_message(m.INVALID[name])


def test_wsinv_values() -> None:
    """3.1.1.1: folding, LWS around separators, compact forms, odd case."""
    r = _request(m.WSINV)
    assert r.method == "INVITE"
    assert r.to.tag == "1918181833n"
    assert r.from_.display_name == 'J Rosenberg \\"'
    assert r.from_.tag == "98asjd8"
    assert r.max_forwards == 68
    assert (r.cseq.number, r.cseq.method) == (9, "INVITE")
    assert [(v.transport, v.host, v.branch) for v in r.via] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert r.header("Subject") == ""
    assert r.header("NewFangledHeader") == (
        "newfangled value continued newfangled value"
    )
    assert r.header("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    (contact,) = r.contact
    assert contact.display_name == 'Quoted string ""'
    assert contact.param("newparam") == "newvalue"
    assert contact.param("q") == "0.33"
    assert len(r.body) == 150


def test_intmeth_values() -> None:
    """3.1.1.2: token method, odd URI user/password, quoted-pair controls."""
    r = _request(m.INTMETH)
    assert r.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert r.sip_uri is not None
    assert r.sip_uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert r.sip_uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert r.to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert r.from_.display_name == "token1~` token2'+_ token3*%!.-"
    assert r.from_.param("fromparam''~+*_!.-%") == "работающий"
    assert r.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert r.header("extensionHeader-!.%*+_`'~") == "\ufeff大停電"


def test_esc01_unescapes() -> None:
    """3.1.1.3: escapes in the user part and URI parameters are undone."""
    r = _request(m.ESC01)
    assert r.sip_uri is not None
    assert r.sip_uri.user == "sips:user@example.com"
    assert r.to.sip_uri is not None and r.to.sip_uri.user == "user"
    assert r.from_.sip_uri is not None
    assert r.from_.sip_uri.user == "I have spaces"
    contact = r.contact[0].sip_uri
    assert contact is not None
    assert contact.user == "caller"
    assert contact.has_param("lr")
    assert contact.param("name") == "value%41"
    assert r.header("c") == "application/sdp"


def test_escnull_keeps_nul() -> None:
    """3.1.1.4: %00 is a legal escape and stays a NUL character."""
    r = _request(m.ESCNULL)
    assert r.to.sip_uri is not None and r.to.sip_uri.user == "null-\x00-null"
    assert [c.sip_uri.user for c in r.contact if c.sip_uri] == ["\x00", "\x00\x00"]


def test_esc02_percent_is_not_an_escape_in_tokens() -> None:
    """3.1.1.5: RE%47IST%45R is an unknown method; C%6Fntact an unknown header."""
    r = _request(m.ESC02)
    assert r.method == "RE%47IST%45R"
    assert len(r.contact) == 2
    assert r.header("C%6Fntact") == "<sip:alias2@host2.example.com>"
    assert r.to.display_name == "%Z%45"


def test_lwsdisp_display_name_touching_uri() -> None:
    """3.1.1.6: 'caller<sip:...>' is a display name and a URI."""
    r = _request(m.LWSDISP)
    assert r.from_.display_name == "caller"
    assert r.from_.tag == "323"


def test_longreq_many_vias() -> None:
    """3.1.1.7: 34 Via values in mixed spellings, long values intact."""
    r = _request(m.LONGREQ)
    assert len(r.via) == 34
    assert r.via[0].host == "sip33.example.com"
    assert r.via[-1].received == "192.0.2.5"
    assert r.to.display_name is not None and "extremeextreme" in r.to.display_name
    assert r.to.sip_uri is not None and r.to.sip_uri.port == 6000


def test_dblreq_only_the_first_message() -> None:
    """3.1.1.8: Content-Length 0 ends the message; the rest is ignored."""
    r = _request(m.DBLREQ)
    assert r.method == "REGISTER"
    assert r.body == b""


def test_semiuri_user_with_semicolons() -> None:
    """3.1.1.9: ';par=u@example.net' belongs to the user part; Accept folds."""
    r = _request(m.SEMIURI)
    assert r.sip_uri is not None
    assert r.sip_uri.user == "user;par=u@example.net"
    assert r.sip_uri.host == "example.com"
    assert r.sip_uri.params == ()
    assert len(r.header_values("Accept")) == 6


def test_transports_unknown_transport() -> None:
    """3.1.1.10: SCTP, TLS and an unknown transport are kept as written."""
    r = _request(m.TRANSPORTS)
    assert [v.transport for v in r.via] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def test_mpart01_binary_body() -> None:
    """3.1.1.11: a multipart body with binary octets is kept byte for byte."""
    r = _request(m.MPART01)
    assert len(r.body) == 553
    ctype = r.content_type
    assert ctype is not None and ctype.mime == "multipart/mixed"
    assert r.via[0].wants_rport


def test_unreason_utf8_reason_phrase() -> None:
    """3.1.1.12: a UTF-8 reason phrase is kept."""
    resp = parse_message(m.UNREASON)
    assert isinstance(resp, Response)
    assert resp.status == 200
    assert resp.reason.endswith("простое")


def test_noreason_empty_phrase() -> None:
    """3.1.1.13: 'SIP/2.0 100 ' has an empty reason phrase."""
    resp = parse_message(m.NOREASON)
    assert isinstance(resp, Response)
    assert (resp.status, resp.reason) == (100, "")


def test_unkscm_keeps_unknown_scheme() -> None:
    """3.3.2: an unknown Request-URI scheme parses; the TU answers 416."""
    r = _request(m.UNKSCM)
    assert r.sip_uri is None
    assert r.aor is None
    assert r.uri == "nobodyKnowsThisScheme:totallyopaquecontent"


def test_unknown_schemes_in_headers() -> None:
    """3.3.4-style: non-SIP URIs in To/From parse as absolute URIs."""
    data = m.UNKSCM.replace(b"To: sip:user@example.com", b"To: isbn:2983792873")
    r = _request(data)
    assert isinstance(r.to.uri, AbsoluteUri)
    assert r.to.uri.scheme == "isbn"


def test_zeromf() -> None:
    """3.3.11: Max-Forwards 0 is valid syntax."""
    assert _request(m.ZEROMF).max_forwards == 0


def test_bcast_response_route_is_refused() -> None:
    """3.3.10: a response must never be routed to 255.255.255.255."""
    resp = parse_message(m.BCAST)
    assert isinstance(resp, Response)
    assert route_response(resp.via[1], Transport.UDP) is None


@pytest.mark.parametrize(
    ("name", "status", "words"),
    [
        ("badinv01", 400, "parameter"),
        ("clerr", 400, "Content-Length"),
        ("ncl", 400, "Content-Length"),
        ("scalar02", 400, "CSeq"),
        ("quotbal", 400, "quoted"),
        ("ltgtruri", 400, "Request-URI"),
        ("lwsruri", 400, "request line"),
        ("lwsstart", 400, "request line"),
        ("trws", 400, "request line"),
        ("escruri", 400, "Request-URI"),
        ("baddate", 400, "Date"),
        ("regbadct", 400, "Contact"),
        ("badaspec", 400, "URI"),
        ("baddn", 400, "display name"),
        ("badvers", 505, "Version"),
        ("mismatch01", 400, "CSeq method"),
        ("mismatch02", 400, "CSeq method"),
        ("insuf", 400, "Missing"),
        ("multi01", 400, "More than one"),
        ("mcl01", 400, "Content-Length"),
    ],
)
def test_invalid_requests_get_a_routable_error(
    name: str, status: int, words: str
) -> None:
    """Each invalid request yields the RFC's status and a telling reason."""
    with pytest.raises(SipParseError) as info:
        parse_message(m.INVALID[name])
    assert info.value.status == status
    assert words in info.value.reason
    response = build_error_response(info.value, to_tag="gw1")
    if name == "insuf":
        assert response is None  # no From/To/Call-ID: nothing to copy
        return
    assert response is not None
    assert response.status == status
    wire = response.to_bytes()
    assert wire.startswith(f"SIP/2.0 {status} ".encode())
    to_line = next(x for x in wire.split(b"\r\n") if x.startswith(b"To:"))
    assert b";tag=" in to_line  # ours, or the one the request already had
    assert wire.endswith(b"Content-Length: 0\r\n\r\n")


@pytest.mark.parametrize("name", ["scalarlg", "bigcode"])
def test_invalid_responses_are_dropped(name: str) -> None:
    """3.1.2.5/3.1.2.19: bad responses raise and no response is built."""
    with pytest.raises(SipParseError) as info:
        parse_message(m.INVALID[name])
    assert build_error_response(info.value) is None
