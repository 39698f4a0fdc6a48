"""The SIP UDP port: Twisted's ``udp.Port`` that also tells how long the
oldest unread datagram waited in the kernel.

The reactor's own lateness misses that queue. The SIP socket's receive
buffer is 4 MB, seconds of INVITEs at full load, while each read of it
(Twisted stops at 256 KB) still hands back to the loop, so timers fire
nearly on time as requests go stale. The kernel stamps every datagram on
arrival (``SO_TIMESTAMPNS``, Linux); the stamp of the first datagram a read
takes is the wait a SIP peer sees before its request is even parsed, which
is what decides whether it retransmits (T1, 500 ms). Elsewhere the port is
Twisted's, and the overload guard has the reactor's lateness alone.
"""

from __future__ import annotations

import socket
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import udp
from twisted.internet.interfaces import IListeningPort
from twisted.internet.posixbase import PosixReactorBase
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

__all__ = ["QueueTimedPort", "listen_udp"]

# <asm-generic/socket.h>: SO_TIMESTAMPNS == SCM_TIMESTAMPNS; Python has no name
# for it. The control message is a struct timespec.
SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("@qq")
_CMSG_SPACE = socket.CMSG_SPACE(_TIMESPEC.size)


class QueueTimedPort(udp.Port):
    """Reads each batch's first datagram with ``recvmsg`` for its kernel
    arrival stamp and reports its age to ``on_delay``; the rest of the batch
    is Twisted's own ``doRead``."""

    log = Logger()

    def __init__(
        self,
        port: int,
        proto: DatagramProtocol,
        interface: str,
        max_packet_size: int,
        reactor: Any,
        *,
        on_delay: Callable[[float], None],
        now: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(port, proto, interface, max_packet_size, reactor)  # type: ignore[no-untyped-call]
        self._on_delay = on_delay
        self._now = now  # the stamps are CLOCK_REALTIME, whatever the reactor's clock
        self.timed = False

    def startListening(self) -> None:
        super().startListening()  # type: ignore[no-untyped-call]
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        except OSError as e:
            self.log.warn("SIP UDP arrival stamps off: {e}", e=str(e))
        else:
            self.timed = True

    def doRead(self) -> None:
        if self.timed:
            self._read_first()
        super().doRead()  # type: ignore[no-untyped-call]

    def _read_first(self) -> None:
        try:
            data, ancillary, _flags, addr = self.socket.recvmsg(
                self.maxPacketSize, _CMSG_SPACE
            )
        except OSError:
            # Nothing queued, or an earlier datagram's ICMP error: the port is
            # not connected, so Twisted's read would ignore it too.
            return
        for level, kind, value in ancillary:
            if (
                level == socket.SOL_SOCKET
                and kind == SO_TIMESTAMPNS
                and len(value) >= _TIMESPEC.size
            ):
                seconds, nanoseconds = _TIMESPEC.unpack_from(value)
                arrived = seconds + nanoseconds / 1e9
                self._on_delay(max(0.0, self._now() - arrived))
                break
        if self.addressFamily == socket.AF_INET6:
            addr = addr[:2]  # (host, port), as Twisted hands it on
        try:
            self.protocol.datagramReceived(data, addr)
        except Exception:  # noqa: BLE001 - as Twisted's doRead: log, read on
            self.log.failure("SIP UDP datagram handler failed")


def listen_udp(
    reactor: Any,
    port: int,
    protocol: DatagramProtocol,
    interface: str,
    max_packet_size: int,
    *,
    on_delay: Callable[[float], None] | None = None,
) -> IListeningPort:
    """Listen with a ``QueueTimedPort`` on Twisted's POSIX reactors on Linux
    (built the way their ``listenUDP`` builds ``udp.Port``); anything else,
    such as a test's ``MemoryReactor``, or no ``on_delay``, gets a plain
    ``listenUDP``."""
    linux = sys.platform.startswith("linux")
    if on_delay is None or not linux or not isinstance(reactor, PosixReactorBase):
        listening: IListeningPort = reactor.listenUDP(
            port, protocol, interface=interface, maxPacketSize=max_packet_size
        )
        return listening
    timed = QueueTimedPort(
        port, protocol, interface, max_packet_size, reactor, on_delay=on_delay
    )
    timed.startListening()
    return timed
