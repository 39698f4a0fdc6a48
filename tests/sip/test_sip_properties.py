"""Property tests: whatever arrives, only SipParseError escapes the parser."""

from __future__ import annotations

from dataclasses import replace

import rfc4475_messages as m
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.sip import (
    Request,
    SipParseError,
    SipUri,
    build_error_response,
    build_response,
    parse_message,
    parse_sip_uri,
)

SAMPLES = [*m.VALID.values(), *m.INVALID.values()]
_SETTINGS = settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])


def _parse_or_error(data: bytes) -> None:
    try:
        msg = parse_message(data)
    except SipParseError as e:
        assert e.reason
        assert "\r" not in e.reason and "\n" not in e.reason
        response = build_error_response(e, to_tag="t", source=("192.0.2.1", 5060))
        if response is not None:
            # Our 400 copies broken values as received, so it need not parse
            # strictly, but it must stay one well-framed message.
            wire = response.to_bytes()
            head, sep, body = wire.partition(b"\r\n\r\n")
            assert sep and body == b""
            assert head.count(b"\r") == head.count(b"\n") == head.count(b"\r\n")
            assert head.startswith(b"SIP/2.0 %d " % e.status)
        return
    if isinstance(msg, Request):
        # and every request we accept can be answered
        wire = build_response(msg, 480, to_tag="t").to_bytes()
        parse_message(wire)


@_SETTINGS
@given(st.binary(max_size=2048))
def test_random_bytes(data: bytes) -> None:
    """Random bytes never raise anything but SipParseError."""
    _parse_or_error(data)


@_SETTINGS
@given(
    st.sampled_from(SAMPLES),
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=4000),
            st.integers(min_value=0, max_value=8),
            st.binary(max_size=8)
            | st.sampled_from(
                [b"\r\n", b"\r\n ", b";", b",", b'"', b"<", b">", b":", b"%", b"\\"]
            ),
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_mutated_messages(sample: bytes, edits: list[tuple[int, int, bytes]]) -> None:
    """Valid and torture messages with spliced bytes: only SipParseError."""
    data = bytearray(sample)
    for where, cut, insert in edits:
        pos = where % (len(data) + 1)
        data[pos : pos + cut] = insert
    _parse_or_error(bytes(data))


@_SETTINGS
@given(st.text(max_size=200))
def test_random_header_values(value: str) -> None:
    """Any text as a From/Contact/Via/X- value: parsed or SipParseError."""
    base = m.LWSDISP
    for name in (b"From: ", b"Via: ", b"To: "):
        start = base.index(name) + len(name)
        end = base.index(b"\r\n", start)
        data = base[:start] + value.encode("utf-8", "surrogatepass") + base[end:]
        _parse_or_error(data)


_USER = st.text(
    st.characters(min_codepoint=0, max_codepoint=0x2FF, exclude_categories=("Cs",)),
    min_size=1,
    max_size=12,
)
_NAME = st.from_regex(r"[a-z][a-z0-9\-]{0,8}", fullmatch=True)


@_SETTINGS
@given(
    _USER,
    st.sampled_from(["example.com", "192.0.2.1", "2001:db8::1"]),
    st.none() | st.integers(min_value=1, max_value=65535),
    st.lists(st.tuples(_NAME, st.none() | _USER), max_size=3, unique_by=lambda p: p[0]),
)
def test_sip_uri_round_trip(
    user: str, host: str, port: int | None, params: list[tuple[str, str | None]]
) -> None:
    """Any user part and parameters survive str() and parse_sip_uri()."""
    uri = SipUri(user=user, host=host, port=port, params=tuple(params))
    assert parse_sip_uri(str(uri)) == uri


def test_request_round_trip() -> None:
    """Request.to_bytes() re-parses to an equal request."""
    for data in (m.WSINV, m.INTMETH, m.ESC01, m.LONGREQ, m.MPART01):
        first = parse_message(data)
        assert isinstance(first, Request)
        again = parse_message(first.to_bytes())
        assert isinstance(again, Request)
        # Content-Length moves to the end; everything else is equal.
        assert [h for h in again.headers if h.key != "content-length"] == [
            h for h in first.headers if h.key != "content-length"
        ]
        assert replace(again, headers=()) == replace(first, headers=())
