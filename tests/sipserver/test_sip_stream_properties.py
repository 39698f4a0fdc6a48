"""SIP over TCP with the real application: whatever the peers send, split
however, each connection only ever gets whole, well-formed responses; a
peer's garbage closes at most its own connection; nothing fails; and a
peer that behaves is answered at the end.
"""

from __future__ import annotations

from typing import Any

from gw_front import Front, make_front
from gw_sipgen import sip_requests
from hypothesis import event as record
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs

from gateway.sip import PONG, Response, Transport, parse_message
from gateway.sipserver.server import SipStreamFactory, SipStreamProtocol

OPTIONS = (
    b"OPTIONS sip:gw@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK-witness\r\n"
    b"From: <sip:a@b>;tag=1\r\nTo: <sip:gw@127.0.0.1>\r\nCall-ID: witness\r\n"
    b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)

_STEP = st.one_of(
    st.tuples(st.just("send"), st.integers(0, 2), sip_requests(), st.integers(1, 64)),
    st.tuples(st.just("send"), st.integers(0, 2), sip_requests(), st.integers(1, 64)),
    st.tuples(st.just("bytes"), st.integers(0, 2), st.binary(max_size=60), st.just(60)),
    st.tuples(st.just("bytes"), st.integers(0, 2), st.just(b"\r\n\r\n"), st.just(4)),
    st.tuples(st.just("close"), st.integers(0, 2)),
    st.tuples(st.just("time"), st.sampled_from((1.0, 11.0, 40.0))),
)


class Peer:
    def __init__(self, factory: SipStreamFactory, port: int) -> None:
        address = IPv4Address("TCP", "127.0.0.1", port)
        proto = factory.buildProtocol(address)
        assert isinstance(proto, SipStreamProtocol)
        self.proto = proto
        self.tr = StringTransport(peerAddress=address)
        proto.makeConnection(self.tr)
        self.closed = False

    def send(self, data: bytes, chunk: int) -> None:
        for i in range(0, len(data), chunk):
            if self.closed or self.tr.disconnecting:
                return
            self.proto.dataReceived(data[i : i + chunk])

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.proto.connectionLost()

    def responses(self) -> list[Response]:
        """Everything written here, which must split into whole responses
        (between them, the CRLF pongs to keep-alive pings)."""
        out, data = [], self.tr.value()
        while data:
            if data.startswith(PONG):
                data = data[len(PONG) :]
                continue
            end = data.index(b"\r\n\r\n") + 4
            response = parse_message(data[:end])
            assert isinstance(response, Response)
            length = int(response.header("Content-Length") or 0)
            out.append(parse_message(data[: end + length]))
            data = data[end + length :]
        return out


def _apply(front: Front, peers: list[Peer], step: tuple[Any, ...]) -> None:
    kind = step[0]
    if kind == "time":
        front.clock.advance(step[1])
        return
    peer = peers[step[1] % len(peers)]
    if kind == "close":
        peer.close()
    else:
        peer.send(step[2], step[3])


@settings(max_examples=200)
@given(st.lists(_STEP, max_size=20))
def test_stream_peers_are_kept_apart(steps: list[tuple[Any, ...]]) -> None:
    front = make_front()
    factory = SipStreamFactory(
        front.server, Transport.TCP, front.clock, idle_timeout_s=300, max_connections=10
    )
    with capturedLogs() as events:
        peers = [Peer(factory, 5070 + i) for i in range(3)]
        for step in steps:
            _apply(front, peers, step)
        witness = Peer(factory, 5999)
        witness.send(OPTIONS, 1000)
    assert [e for e in events if "log_failure" in e] == []
    for peer in peers:
        for response in peer.responses():
            assert response.status != 500
            record(f"status {response.status}")  # --hypothesis-show-statistics
        record("closed" if peer.tr.disconnecting else "open")
    [answer] = witness.responses()
    assert answer.status == 200
