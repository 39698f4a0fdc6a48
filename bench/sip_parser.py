"""Throughput of gateway.sip on typical INVITEs; prints the figures in docs.

Run: .venv/bin/python bench/sip_parser.py

Figures are CPU time (best of three runs), so a busy machine skews them
less than wall time. Every INVITE is distinct (branch, Call-ID, tags);
"realistic" draws callees from 100 users and callers from 1,000, so URIs
recur as they do in real traffic; "all URIs new" defeats the URI cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from gateway.sip import (
    FramedMessage,
    Request,
    StreamFramer,
    TransactionLayer,
    Transport,
    build_response,
    parse_message,
)

N = 20000
SDP = (
    b"v=0\r\no=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\ns=-\r\n"
    b"c=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
)


def invite(i: int, callee: int, caller: int) -> bytes:
    """One INVITE as a SIP core forks it to the gateway."""
    return (
        b"INVITE sip:user%d@example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-%d-776asdhds;rport\r\n"
        b"Max-Forwards: 70\r\n"
        b"To: <sip:user%d@example.com>\r\n"
        b'From: "Caller %d" <sip:+4930%d@example.com>;tag=%dtag\r\n'
        b"Call-ID: %d-a84b4c76e66710@core.example.com\r\n"
        b"CSeq: 314159 INVITE\r\n"
        b"Contact: <sip:+4930%d@192.0.2.10:5060;transport=udp>\r\n"
        b"P-Asserted-Identity: <sip:+4930%d@example.com>\r\n"
        b"X-Tenant: acme\r\n"
        b"Content-Type: application/sdp\r\n"
        b"Content-Length: %d\r\n\r\n"
        % (callee, i, callee, caller, caller, i, i, caller, caller, len(SDP))
    ) + SDP


REALISTIC = [invite(i, i % 100, (i * 7) % 1000) for i in range(N)]
ALL_NEW = [invite(i, N + i, 2 * N + i) for i in range(3 * N, 4 * N)]


def _rate(label: str, fn: Callable[[], int]) -> None:
    """Best of three runs of ``fn`` (which returns its message count)."""
    best, count = float("inf"), 0
    for _ in range(3):
        start = time.process_time()
        count = fn()
        best = min(best, time.process_time() - start)
    print(f"{label:52s} {count / best:10,.0f} msg/s  {best / count * 1e6:6.1f} us")


def _parse_all(messages: Sequence[bytes]) -> int:
    for data in messages:
        parse_message(data)
    return len(messages)


def _frame_all(stream: bytes, count: int) -> int:
    framer = StreamFramer()
    got = 0
    for pos in range(0, len(stream), 1400):  # one TCP segment at a time
        got += sum(
            isinstance(f, FramedMessage) for f in framer.feed(stream[pos : pos + 1400])
        )
    assert got == count
    return count


def _full_call(messages: Sequence[bytes]) -> int:
    """Parse, open the transaction (100 Trying), send 180 and 480, take ACK."""
    layer = TransactionLayer()
    source = ("192.0.2.10", 5060)
    for data in messages:
        request = parse_message(data)
        assert isinstance(request, Request)
        actions = layer.receive(request, Transport.UDP, source, 0.0)
        key = actions[-1].key  # type: ignore[union-attr]
        stamped = actions[-1].request  # type: ignore[union-attr]
        layer.respond(key, build_response(stamped, 180, to_tag="gw"), 0.0)
        layer.respond(key, build_response(stamped, 480, to_tag="gw"), 0.0)
    return len(messages)


def main() -> None:
    """Print msgs/s for parsing, framing and the whole per-INVITE SIP work."""
    request = parse_message(REALISTIC[0])
    assert isinstance(request, Request)
    _rate("parse_message, realistic INVITE mix", lambda: _parse_all(REALISTIC))
    _rate("parse_message, all URIs new (cache misses)", lambda: _parse_all(ALL_NEW))
    _rate(
        "build_response(180).to_bytes()",
        lambda: sum(
            1 for _ in range(N) if build_response(request, 180, to_tag="t").to_bytes()
        ),
    )
    stream = b"".join(REALISTIC[:5000])
    _rate("StreamFramer.feed, 1400-byte reads", lambda: _frame_all(stream, 5000))
    _rate("INVITE: parse + transaction + 100/180/480", lambda: _full_call(REALISTIC))


if __name__ == "__main__":
    main()
