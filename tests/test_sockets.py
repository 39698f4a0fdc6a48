"""TCP_NODELAY on the gateway's TCP connections, read back from the kernel."""

from __future__ import annotations

import socket
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol

from gateway.sockets import no_delay


class Accepted(Protocol):
    def connectionMade(self) -> None:
        no_delay(self.transport)
        self.factory.accepted.callback(self.transport)  # type: ignore[attr-defined]


@pytest_twisted.ensureDeferred
async def test_no_delay_sets_tcp_nodelay_on_a_real_connection() -> None:
    """Twisted leaves Nagle on; ``no_delay`` turns it off on the socket."""
    factory = Factory.forProtocol(Accepted)
    factory.accepted = Deferred()  # type: ignore[attr-defined]
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
    client = socket.create_connection(("127.0.0.1", port.getHost().port))
    try:
        transport: Any = await factory.accepted  # type: ignore[attr-defined]
        handle = transport.getHandle()
        assert handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        transport.loseConnection()
    finally:
        client.close()
        await port.stopListening()


def test_no_delay_leaves_transports_without_the_option_alone() -> None:
    """A proxy tunnel or a test transport has no ``setTcpNoDelay``."""
    no_delay(object())
