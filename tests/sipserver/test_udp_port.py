"""The SIP UDP port: each read's first datagram says how long it queued."""

from __future__ import annotations

import select
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet import reactor, udp
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import capturedLogs

from gateway.sipserver.udpport import QueueTimedPort, listen_udp

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="SO_TIMESTAMPNS is Linux's"
)

SKEW_S = 0.3  # the port's clock runs this far ahead: every datagram looks old


class Collect(DatagramProtocol):
    def __init__(self, fail_on: bytes = b"") -> None:
        self.got: list[tuple[bytes, Any]] = []
        self.fail_on = fail_on

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if datagram == self.fail_on:
            raise ValueError("handler bug")
        self.got.append((datagram, addr))


@pytest.fixture
def peer() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


def timed_port(proto: Collect, waits: list[float]) -> QueueTimedPort:
    port = QueueTimedPort(
        0,
        proto,
        "127.0.0.1",
        65_535,
        reactor,
        on_delay=waits.append,
        now=lambda: time.time() + SKEW_S,
    )
    port.startListening()
    return port


def read_when_ready(port: QueueTimedPort) -> None:
    """The reactor's part, done by hand: wait (bounded) until the socket is
    readable, then read one batch."""
    readable, _, _ = select.select([port.socket], [], [], 5)
    assert readable, "the datagrams never arrived"
    port.doRead()


def test_first_datagram_of_a_batch_reports_its_wait_and_all_are_delivered(
    peer: socket.socket,
) -> None:
    """Three datagrams queued: one read delivers all three in order, with the
    source address as Twisted gives it, and reports one wait: the first
    datagram's, measured from the kernel's arrival stamp."""
    proto, waits = Collect(), []
    port = timed_port(proto, waits)
    try:
        assert port.timed
        target = ("127.0.0.1", port.getHost().port)
        for n in range(3):
            peer.sendto(b"dgram-%d" % n, target)
        sent_by = time.time()
        read_when_ready(port)
        # All three may not have landed before the first read: read on.
        while len(proto.got) < 3:
            read_when_ready(port)
    finally:
        port.stopListening()
    assert [d for d, _ in proto.got] == [b"dgram-0", b"dgram-1", b"dgram-2"]
    assert {a for _, a in proto.got} == {peer.getsockname()}
    assert 1 <= len(waits) <= 3
    # Arrival stamped before sendto returned; the port's clock is SKEW_S ahead.
    assert SKEW_S <= waits[0] < SKEW_S + (time.time() - sent_by) + 1.0


def test_empty_socket_reports_nothing() -> None:
    """A spurious wake-up (nothing queued) is no wait and no error."""
    proto, waits = Collect(), []
    port = timed_port(proto, waits)
    try:
        port.doRead()
    finally:
        port.stopListening()
    assert (proto.got, waits) == ([], [])


def test_a_failing_handler_is_logged_and_the_batch_read_on(
    peer: socket.socket,
) -> None:
    """The datagram read for its stamp goes through the same guard as
    Twisted's: a handler error is logged, the next datagrams still arrive."""
    proto, waits = Collect(fail_on=b"bad"), []
    port = timed_port(proto, waits)
    try:
        target = ("127.0.0.1", port.getHost().port)
        peer.sendto(b"bad", target)
        peer.sendto(b"good", target)
        with capturedLogs() as events:
            read_when_ready(port)
            while not proto.got:
                read_when_ready(port)
    finally:
        port.stopListening()
    assert [d for d, _ in proto.got] == [b"good"]
    failures = [e for e in events if "log_failure" in e]
    assert len(failures) == 1
    assert failures[0]["log_failure"].check(ValueError)


def test_listen_udp_uses_the_timed_port_only_when_asked_on_a_real_reactor() -> None:
    """Another reactor (a test's fake, a non-POSIX one) or no ``on_delay``
    (guard off) get the reactor's plain ``listenUDP``."""

    class OtherReactor:
        def __init__(self) -> None:
            self.calls: list[tuple[Any, ...]] = []

        def listenUDP(self, *args: Any, **kwargs: Any) -> str:
            self.calls.append((*args, kwargs))
            return "port"

    other = OtherReactor()
    proto = Collect()
    assert listen_udp(other, 5060, proto, "::1", 1_500, on_delay=print) == "port"
    assert other.calls == [(5060, proto, {"interface": "::1", "maxPacketSize": 1_500})]
    plain = listen_udp(reactor, 0, Collect(), "127.0.0.1", 65_535)
    timed = listen_udp(reactor, 0, Collect(), "127.0.0.1", 65_535, on_delay=print)
    try:
        assert type(plain) is udp.Port
        assert isinstance(timed, QueueTimedPort) and timed.timed
    finally:
        plain.stopListening()
        timed.stopListening()
