"""The SIP front under abuse, over real sockets on 127.0.0.1.

RFC 4475 invalid messages over UDP, a 10 MB Content-Length on TCP, a
slow-loris TCP peer and a flood of INVITE retransmissions: each is refused,
cut off or absorbed while everyone else keeps being served (calls.md
"Requests", "Transports"). Every loop is bounded in count and time.
"""

from __future__ import annotations

import importlib.util
import socket
import uuid
from collections.abc import Callable, Generator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import pytest_twisted
from sipp_helpers import (
    BUNDLE,
    AutoDevice,
    Sipp,
    StreamPeer,
    UdpPeer,
    header_of,
    offline_device,
    status_of,
)
from twisted.internet import endpoints, reactor
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.task import LoopingCall, deferLater

import gateway.sipserver.server as sip_server
from gateway.app import Gateway

pytestmark = pytest.mark.integration

BOB = "sip:bob@example.com"
Connect = Callable[..., Deferred[AutoDevice]]


def _rfc4475() -> ModuleType:
    """tests/sip/rfc4475_messages.py (a data module, not on our sys.path)."""
    path = Path(__file__).parent.parent / "sip" / "rfc4475_messages.py"
    spec = importlib.util.spec_from_file_location("rfc4475_for_robustness", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _request(
    method: str,
    port: int,
    *,
    branch: str,
    call_id: str,
    to: str = BOB,
    cseq: int = 1,
    headers: str = "",
    body: bytes = b"",
    content_length: int | None = None,
) -> bytes:
    """A SIP request from 127.0.0.1:port (with rport, so answers come back)."""
    length = len(body) if content_length is None else content_length
    head = (
        f"{method} {to} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};rport;branch={branch}\r\n"
        "Max-Forwards: 70\r\n"
        'From: "Alice" <sip:+4930123@example.com>;tag=robust\r\n'
        f"To: <{to}>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        f"{headers}"
        f"Content-Length: {length}\r\n\r\n"
    )
    return head.encode() + body


def _udp_address(gateway: Gateway) -> tuple[str, int]:
    address = gateway.listeners["sip-udp"].address
    assert address is not None
    return address


@pytest.fixture
def peer() -> Generator[UdpPeer, None, None]:
    """A UDP socket on 127.0.0.1 standing in for a SIP core."""
    udp = UdpPeer()
    port = reactor.listenUDP(0, udp, interface="127.0.0.1")  # type: ignore[attr-defined]
    yield udp
    pytest_twisted.blockon(maybeDeferred(port.stopListening))


def _options_ok(
    peer: UdpPeer, gateway: Gateway
) -> Generator[Deferred[Any], Any, list[bytes]]:
    """Send OPTIONS; return what came before its 200 (bounded wait)."""
    call_id = f"opt-{uuid.uuid4()}"
    peer.send(
        _request(
            "OPTIONS",
            peer.port,
            branch=f"z9hG4bK-{uuid.uuid4().hex}",
            call_id=call_id,
            to="sip:127.0.0.1",
        ),
        _udp_address(gateway),
    )
    before: list[bytes] = []
    for _ in range(10):
        datagram = yield peer.next()
        if header_of(datagram, "Call-ID") == call_id:
            assert status_of(datagram) == 200
            return before
        before.append(datagram)
    raise AssertionError(f"no 200 to OPTIONS; got {before!r}")


@pytest_twisted.inlineCallbacks
def test_rfc4475_invalid_messages_over_udp_are_refused_and_options_answers(
    gateway: Gateway, peer: UdpPeer
) -> Generator[Deferred[Any], Any, None]:
    """Every RFC 4475 invalid message is counted bad and gets a 400 (where its
    Via leads back to us) or nothing; OPTIONS is answered after each one."""
    messages = _rfc4475().INVALID
    assert gateway.sip is not None
    bad_before = gateway.sip.stats["bad"]
    for name, data in sorted(messages.items()):
        peer.send(data, _udp_address(gateway))
        before = yield from _options_ok(peer, gateway)
        assert all(status_of(d) == 400 for d in before), (name, before)
    assert gateway.sip.stats["bad"] - bad_before == len(messages)
    assert gateway.dispatcher is not None
    assert gateway.dispatcher.active_count == 0


def _without(data: bytes, header: bytes) -> bytes:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = [line for line in head.split(b"\r\n") if not line.startswith(header)]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _options(port: int, case: str, headers: str = "") -> bytes:
    return _request(
        "OPTIONS", port, branch=f"z9hG4bK-{case}", call_id=case, headers=headers
    )


# Malformed requests -> 400 where a response can be built and routed back,
# else dropped (calls.md "Bad input").
MALFORMED: dict[str, tuple[Callable[[int], bytes], int | None]] = {
    "bad CSeq number": (
        lambda port: _options(port, "b1").replace(b"CSeq: 1 ", b"CSeq: one "),
        400,
    ),
    "Content-Length over the datagram": (
        lambda port: _request(
            "MESSAGE",
            port,
            branch="z9hG4bK-b2",
            call_id="b2",
            body=b"hi",
            content_length=900,
        ),
        400,
    ),
    "bad Expires": (lambda port: _options(port, "b3", "Expires: soon\r\n"), 400),
    "bad Contact": (lambda port: _options(port, "b4", "Contact: <sip:x\r\n"), 400),
    "bad Content-Type": (
        lambda port: _options(port, "b5", "Content-Type: ///\r\n"),
        400,
    ),
    "no Call-ID": (lambda port: _without(_options(port, "b6"), b"Call-ID:"), None),
    "no From": (lambda port: _without(_options(port, "b7"), b"From:"), None),
    "no CSeq": (lambda port: _without(_options(port, "b8"), b"CSeq:"), None),
    "no Via": (lambda port: _without(_options(port, "b9"), b"Via:"), None),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
@pytest_twisted.inlineCallbacks
def test_malformed_request_gets_400_or_is_dropped(
    gateway: Gateway, peer: UdpPeer, case: str
) -> Generator[Deferred[Any], Any, None]:
    """A malformed request gets one 400 whose reason phrase says what is wrong
    where a response can be built (From, To, Call-ID, CSeq, Via present) and
    routed back, and nothing otherwise; the next OPTIONS is answered."""
    build, expected = MALFORMED[case]
    peer.send(build(peer.port), _udp_address(gateway))
    before = yield from _options_ok(peer, gateway)
    if expected is None:
        assert before == []
    else:
        [answer] = before
        assert status_of(answer) == expected, answer
        reason = answer.split(b"\r\n", 1)[0].decode()
        assert reason != "SIP/2.0 400 Bad Request", "the phrase says what is wrong"


def _tcp_peer(gateway: Gateway) -> Deferred[StreamPeer]:
    address = gateway.listeners["sip-tcp"].address
    assert address is not None
    endpoint = endpoints.TCP4ClientEndpoint(reactor, address[0], address[1])
    return endpoints.connectProtocol(endpoint, StreamPeer())


@pytest_twisted.inlineCallbacks
def test_tcp_10mb_content_length_is_cut_off_at_once(
    gateway: Gateway, peer: UdpPeer
) -> Generator[Deferred[Any], Any, None]:
    """A TCP peer announcing a 10 MB body is disconnected on the header alone,
    before it sends the body; the gateway keeps answering."""
    stream = yield _tcp_peer(gateway)
    assert stream.transport is not None
    started = reactor.seconds()  # type: ignore[attr-defined]
    stream.transport.write(
        _request(
            "MESSAGE",
            5060,
            branch="z9hG4bK-huge",
            call_id="huge",
            headers="Content-Type: text/plain\r\n",
            content_length=10 * 1024 * 1024,
        )
        + b"x" * 1024
    )
    yield stream.lost.addTimeout(2, reactor)  # type: ignore[arg-type]
    assert reactor.seconds() - started < 2  # type: ignore[attr-defined]
    assert b"202" not in stream.data
    yield from _options_ok(peer, gateway)


@pytest.mark.sipp
@pytest_twisted.inlineCallbacks
def test_slow_loris_is_closed_while_others_are_served(
    gateway: Gateway,
    peer: UdpPeer,
    connect_device: Connect,
    sipp_for: Callable[[str], Sipp],
) -> Generator[Deferred[Any], Any, None]:
    """A TCP peer trickling one byte at a time is closed once the partial-
    message timeout (here 1 s) has passed since its first byte; meanwhile
    another TCP client's OPTIONS and a whole call over TCP complete."""
    phone = yield connect_device("phone-1", BOB)
    loris = yield _tcp_peer(gateway)
    assert loris.transport is not None
    trickle = iter(_request("OPTIONS", 5060, branch="z9hG4bK-loris", call_id="loris"))
    sent = 0

    def one_byte() -> None:
        nonlocal sent
        assert loris.transport is not None
        loris.transport.write(bytes([next(trickle)]))
        sent += 1

    started = reactor.seconds()  # type: ignore[attr-defined]
    dripping = LoopingCall(one_byte)
    dripping.clock = reactor  # type: ignore[assignment]
    dripping.start(0.05)  # at most 100 bytes before the 5 s bound below
    try:
        sipp = sipp_for("tcp")
        options, call = yield gatherResults(
            [
                sipp.run("options.xml", "tcp"),
                sipp.run("invite_cancel_answered.xml", "tcp"),
            ],
            consumeErrors=True,
        )
        yield loris.lost.addTimeout(5, reactor)  # type: ignore[arg-type]
        closed_after = reactor.seconds() - started  # type: ignore[attr-defined]
    finally:
        if dripping.running:
            dripping.stop()
    assert 1.0 <= closed_after < 3.0, closed_after
    assert sent < 60
    assert options.exit_code == 0, options.describe()
    assert call.exit_code == 0, call.describe()
    assert call.statuses("INVITE") == [100, 180, 487]
    assert len(phone.of_type("call")) == 1


@pytest_twisted.inlineCallbacks
def test_invite_retransmission_flood_makes_one_call(
    gateway: Gateway, peer: UdpPeer, connect_device: Connect, apns: Any
) -> Generator[Deferred[Any], Any, None]:
    """50 copies of one INVITE (same branch) then 20 more after 180: one call,
    one call frame, one VoIP push; every copy is answered with the last
    response (100, later 180) and never processed again."""
    phone = yield connect_device("phone-1", BOB)
    yield offline_device(
        connect_device,
        "ipad-1",
        BOB,
        voip_token="cc" * 32,
        topic=BUNDLE,
        apns_env="production",
    )
    assert gateway.sip is not None
    absorbed = gateway.sip.stats["absorbed"]
    branch = f"z9hG4bK-flood-{uuid.uuid4().hex}"
    invite = _request("INVITE", peer.port, branch=branch, call_id="flood")

    for _ in range(50):
        peer.send(invite, _udp_address(gateway))
    first: list[int] = []
    for _ in range(51):  # 50 answers and the one 180 the call itself sends
        first.append(status_of((yield peer.next())))
    assert first[0] == 100 and set(first) == {100, 180}
    assert first.count(180) >= 1

    for _ in range(20):
        peer.send(invite, _udp_address(gateway))
    again = []
    for _ in range(20):
        again.append(status_of((yield peer.next())))
    assert again == [180] * 20

    assert gateway.sip.stats["absorbed"] - absorbed == 69
    yield phone.wait_for("call")
    yield apns.fake.wait_count(1)
    yield deferLater(reactor, 0.3, lambda: None)  # type: ignore[arg-type]
    assert len(apns.fake.pushes) == 1
    assert len(phone.of_type("call")) == 1

    # Clean up the call: CANCEL (200, then 487) and ACK.
    peer.send(
        _request("CANCEL", peer.port, branch=branch, call_id="flood"),
        _udp_address(gateway),
    )
    answers = []
    for _ in range(2):
        answers.append(status_of((yield peer.next())))
    assert sorted(answers) == [200, 487]
    cancel = yield phone.wait_for("call_cancel")
    assert cancel["reason"] == "remote_ended"


def test_udp_receive_buffer_is_raised(gateway: Gateway) -> None:
    """The SIP UDP socket asks for a 4 MiB receive buffer (Linux grants up to
    net.core.rmem_max, doubled for bookkeeping), so bursts queue, not drop."""
    assert gateway.sip is not None and gateway.sip.udp is not None
    sock = gateway.sip.udp.transport.socket  # type: ignore[union-attr]
    granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    rmem_max = Path("/proc/sys/net/core/rmem_max")
    cap = int(rmem_max.read_text()) if rmem_max.exists() else 1 << 30
    wanted = min(sip_server.UDP_RECEIVE_BUFFER_BYTES, cap)
    assert granted >= wanted
