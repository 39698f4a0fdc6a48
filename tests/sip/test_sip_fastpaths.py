"""The parser's cached fast paths give what the full paths give: the same
values, the same errors (a table of common and odd inputs, then random ones)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.sip import (
    Request,
    Response,
    SipParseError,
    build_response,
    parse_message,
    parse_name_addr,
    parse_via,
)
from gateway.sip._headers import _parse_cseq, _parse_name_addr, _parse_via, parse_cseq

VIAS = [
    "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1-1",
    "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1-1;rport",
    "SIP/2.0/UDP 127.0.0.1:5070;rport=5070;received=10.0.0.1;branch=z9hG4bKx",
    "SIP/2.0/TCP core.example.com;branch=z9hG4bKabc",
    "SIP/2.0/TLS [2001:db8::1]:5061;branch=z9hG4bKv6",
    "SIP/2.0/UDP 192.0.2.1",
    "SIP/2.0/udp 192.0.2.1:5060;BRANCH=z9hG4bKUP;TTL=16",
    "SIP / 2.0 / UDP 192.0.2.1 ; branch = z9hG4bK-sp",
    'SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1;x="quoted;value"',
    "SIP/2.0/UDP 192.0.2.1:99999;branch=z9hG4bK1",
    "SIP/2.0/UDP 192.0.2.1;branch=",
    "SIP/2.0/UDP 192.0.2.1;rport=x",
    "SIP/2.0/UDP 192.0.2.1;received=not-an-ip",
    "SIP/2.0/UDP 192.0.2.1;ttl=300",
    "SIP/2.0/UDP [::1;branch=z9hG4bK1",
    "SIP/2.0/UDP bad host;branch=z9hG4bK1",
    "SIP/2.0/UDP 192.0.2.1;;branch=z9hG4bK1",
    "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1;",
]

NAME_ADDRS = [
    "sipp <sip:sipp@127.0.0.1:5070>;tag=1SIPpTag001",
    "<sip:+4930123@core.example.com>;tag=abc;x=1",
    "Alice Smith <sip:alice@example.com>;tag=9fxced76sl",
    '"Alice" <sip:alice@example.com>;tag=t',
    '"a>b" <sip:alice@example.com>;tag=t',
    "<sip:bob@example.com>",
    "sip:bob@example.com;tag=x",
    "<tel:+4930123>;tag=1",
    "<sip:bob@example.com>;tag",
    "<sip:bob@example.com>;tag=a b",
    "<sip:bob@example.com> ; tag = spaced",
    "<sip:bob@example.com>;;tag=x",
    "<sip:bob@exa mple.com>;tag=x",
    "Bad@Name <sip:bob@example.com>;tag=x",
    "<sip:bob@example.com>>;tag=x",
    "<sip:bob@example.com>x",
]


def _same(
    fast: Callable[[str], object], full: Callable[[str], object], value: str
) -> None:
    try:
        expected: object = full(value)
    except SipParseError as e:
        with pytest.raises(SipParseError) as raised:
            fast(value)
        assert (raised.value.reason, raised.value.status) == (e.reason, e.status)
        return
    assert fast(value) == expected
    assert fast(value) == expected  # again, from the caches


@pytest.mark.parametrize("value", VIAS)
def test_via_fast_path_matches_the_full_parse(value: str) -> None:
    """parse_via (sent-by cached) == the full parse, errors included."""
    _same(parse_via, _parse_via, value)


@pytest.mark.parametrize("value", NAME_ADDRS)
def test_name_addr_fast_path_matches_the_full_parse(value: str) -> None:
    """parse_name_addr (the part up to '>' cached) == the full parse."""
    _same(parse_name_addr, _parse_name_addr, value)


@pytest.mark.parametrize("value", ["1 INVITE", "314159 ACK", "x INVITE", "1"])
def test_cseq_cache_matches_the_full_parse(value: str) -> None:
    """parse_cseq (cached) == the full parse, errors included."""
    _same(parse_cseq, _parse_cseq, value)


_PIECES = st.sampled_from(
    [
        "SIP/2.0/UDP ",
        "sipp ",
        "<",
        ">",
        "sip:a@b",
        ":5060",
        ";",
        "=",
        "tag",
        "branch",
        "z9hG4bK",
        '"',
        " ",
        "192.0.2.1",
        "[::1]",
        "rport",
        "x",
        ",",
        "\\",
    ]
)


@settings(max_examples=400)
@given(st.lists(_PIECES, max_size=12).map("".join))
def test_fast_paths_match_on_random_values(value: str) -> None:
    """Random glue of header pieces: fast and full paths agree."""
    _same(parse_via, _parse_via, value)
    _same(parse_name_addr, _parse_name_addr, value)


def test_built_response_bytes_match_the_generic_serialiser() -> None:
    """build_response pre-formats its header lines; the bytes equal what the
    headers give when formatted afresh (a dataclasses.replace copy)."""
    invite = (
        b"INVITE sip:bob@example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1;rport\r\n"
        b"Via: SIP/2.0/TCP proxy.example.com;branch=z9hG4bK-0\r\n"
        b'From: "Alice" <sip:alice@example.com>;tag=f1\r\n'
        b"To: <sip:bob@example.com>\r\nCall-ID: c1\r\nCSeq: 7 INVITE\r\n"
        b"Timestamp: 54\r\nContent-Length: 0\r\n\r\n"
    )
    request = parse_message(invite)
    assert isinstance(request, Request)
    responses = [
        build_response(request, 100),
        build_response(
            request, 180, to_tag="t1", headers=[("X-Push-Status", "local;acked")]
        ),
        build_response(
            request, 200, to_tag="t1", body=b"v=0\r\n", content_type="application/sdp"
        ),
        build_response(
            request,
            487,
            to_tag="t1",
            headers=[("Content-Length", "9"), ("Server", "x")],
        ),
    ]
    for response in responses:
        fresh = replace(response, headers=response.headers)
        assert response.to_bytes() == fresh.to_bytes()
        assert isinstance(parse_message(response.to_bytes()), Response)
