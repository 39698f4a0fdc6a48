"""Stream framing: Content-Length cuts, keep-alives, limits (RFC 3261 18.3)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.sip import (
    FramedMessage,
    FramingError,
    LocalProtocolError,
    Ping,
    StreamFramer,
    parse_message,
)

OPTIONS = (
    b"OPTIONS sip:gw@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bKo1\r\n"
    b"From: <sip:core@example.com>;tag=1\r\nTo: <sip:gw@example.com>\r\n"
    b"Call-ID: o1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)
MESSAGE = (
    b"MESSAGE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bKm1\r\n"
    b"From: <sip:alice@example.com>;tag=2\r\nTo: <sip:bob@example.com>\r\n"
    b"Call-ID: m1\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\n"
    b"l:\r\n 11\r\n\r\nhello\r\n\r\nyo"
)


def _messages(frames: list[object]) -> list[bytes]:
    return [f.data for f in frames if isinstance(f, FramedMessage)]


def test_back_to_back_messages() -> None:
    """Two messages in one read come out as two frames, bodies included."""
    framer = StreamFramer()
    frames = framer.feed(OPTIONS + MESSAGE)
    assert _messages(frames) == [OPTIONS, MESSAGE]
    assert framer.buffered == 0
    body = parse_message(MESSAGE).body
    assert body == b"hello\r\n\r\nyo"  # CRLFCRLF inside a body is just body


def test_byte_by_byte() -> None:
    """A message split into single bytes is reassembled."""
    framer = StreamFramer()
    out: list[object] = []
    for i in range(len(MESSAGE)):
        out.extend(framer.feed(MESSAGE[i : i + 1]))
    assert _messages(out) == [MESSAGE]


def test_double_crlf_ping_gets_pong() -> None:
    """RFC 5626: CRLFCRLF between messages is a ping; a lone CRLF is ignored."""
    framer = StreamFramer()
    frames = framer.feed(b"\r\n\r\n" + OPTIONS + b"\r\n" + OPTIONS)
    assert isinstance(frames[0], Ping) and frames[0].pong == b"\r\n"
    assert _messages(frames) == [OPTIONS, OPTIONS]
    assert len(frames) == 3


def test_ping_split_across_reads() -> None:
    """A ping arriving as CRLF then CRLF is still one ping."""
    framer = StreamFramer()
    assert framer.feed(b"\r\n") == []
    assert framer.feed(b"\r\n") == [Ping()]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (OPTIONS.replace(b"Content-Length: 0\r\n", b""), "required"),
        (OPTIONS.replace(b"Content-Length: 0", b"Content-Length: -1"), "Bad"),
        (OPTIONS.replace(b"Content-Length: 0", b"Content-Length: 1\r\nl: 1"), "More"),
    ],
)
def test_content_length_faults_close(data: bytes, reason: str) -> None:
    """Missing, negative or repeated Content-Length breaks the stream."""
    framer = StreamFramer()
    frames = framer.feed(data)
    assert isinstance(frames[-1], FramingError)
    assert reason in frames[-1].reason
    assert framer.closed
    with pytest.raises(LocalProtocolError):
        framer.feed(b"more")


def test_huge_content_length_refused_at_once() -> None:
    """A 10 MB Content-Length is refused before any body is buffered."""
    framer = StreamFramer(max_content_length=65536)
    head = OPTIONS.replace(b"Content-Length: 0", b"Content-Length: 10485760")
    frames = framer.feed(head)
    assert frames == [FramingError(reason="Content-Length over the limit")]
    assert framer.buffered == 0


def test_header_section_limit() -> None:
    """Endless headers without a blank line stop at max_header_bytes."""
    framer = StreamFramer(max_header_bytes=1024)
    frames = framer.feed(b"INVITE sip:a@b SIP/2.0\r\n")
    assert frames == []
    for _ in range(100):
        frames = framer.feed(b"X-Filler: " + b"a" * 50 + b"\r\n")
        if frames:
            break
    assert frames == [FramingError(reason="Header section too large")]


def test_messages_before_an_error_are_kept() -> None:
    """Frames completed before the fault are still returned, in order."""
    framer = StreamFramer()
    bad = OPTIONS.replace(b"Content-Length: 0\r\n", b"")
    frames = framer.feed(OPTIONS + bad)
    assert _messages(frames) == [OPTIONS]
    assert isinstance(frames[-1], FramingError)


_MESSAGES = st.lists(st.sampled_from([OPTIONS, MESSAGE, b"\r\n\r\n"]), max_size=8)


@given(_MESSAGES, st.lists(st.integers(min_value=1, max_value=64), max_size=50))
def test_any_chunking_gives_the_same_messages(
    parts: list[bytes], sizes: list[int]
) -> None:
    """Property: valid messages in any chunking come out unchanged, in order."""
    stream = b"".join(parts)
    framer = StreamFramer()
    frames: list[object] = []
    pos = 0
    for size in sizes:
        frames.extend(framer.feed(stream[pos : pos + size]))
        pos += size
    frames.extend(framer.feed(stream[pos:]))
    assert _messages(frames) == [p for p in parts if p != b"\r\n\r\n"]
    assert not any(isinstance(f, FramingError) for f in frames)
