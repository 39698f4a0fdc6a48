"""A stream listener as a service that knows its bound address.

Twisted's ``StreamServerEndpointService`` hides the listening port; the
gateway logs it, reports it in ``/readyz`` and tests need it when the
config asks for port 0.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReactorTCP,
    IReactorUDP,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from gateway.sipserver.udpport import listen_udp

__all__ = [
    "DatagramListener",
    "ListenError",
    "Listener",
    "StreamListener",
    "tcp_endpoint",
]


class ListenError(Exception):
    """A listener could not bind; start-up stops with this message."""


def tcp_endpoint(reactor: IReactorTCP, bind: str, port: int) -> IStreamServerEndpoint:
    """A TCP endpoint for an IPv4 or IPv6 bind address."""
    if ipaddress.ip_address(bind).version == 6:
        return TCP6ServerEndpoint(reactor, port, interface=bind)  # type: ignore[no-untyped-call]
    return TCP4ServerEndpoint(reactor, port, interface=bind)  # type: ignore[no-untyped-call]


class Listener(Service):
    """A bound port as a service. Binds in ``privilegedStartService`` (before
    twistd drops privileges) and fails start-up with a clear message."""

    log = Logger()

    def __init__(self, label: str) -> None:
        self.label = label
        self.port: IListeningPort | None = None

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) once bound."""
        if self.port is None:
            return None
        addr = self.port.getHost()
        return (addr.host, addr.port)  # type: ignore[attr-defined]

    def _bind(self) -> IListeningPort:
        """Bind now (synchronously) or raise ListenError."""
        raise NotImplementedError

    def privilegedStartService(self) -> None:
        super().privilegedStartService()  # type: ignore[no-untyped-call]
        self._listen()

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._listen()

    def _listen(self) -> None:
        if self.port is not None:
            return
        self.port = self._bind()
        host, number = self.address or ("?", 0)
        self.log.info(
            "{label} listening on {host}:{port}",
            label=self.label,
            host=host,
            port=number,
        )

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        port, self.port = self.port, None
        stopped = port.stopListening() if port is not None else None
        return stopped if stopped is not None else succeed(None)


class StreamListener(Listener):
    """A stream endpoint (TCP, TLS over TCP) and the factory it serves."""

    def __init__(
        self, label: str, endpoint: IStreamServerEndpoint, factory: IProtocolFactory
    ) -> None:
        super().__init__(label)
        self._endpoint = endpoint
        self._factory = factory

    def _bind(self) -> IListeningPort:
        # TCP endpoints listen synchronously: a bind error surfaces here.
        result: list[object] = []
        self._endpoint.listen(self._factory).addBoth(result.append)
        outcome = result[0] if result else None
        if isinstance(outcome, Failure):
            message = outcome.getErrorMessage()
            raise ListenError(f"{self.label} cannot listen: {message}")
        if not IListeningPort.providedBy(outcome):
            raise ListenError(f"{self.label} cannot listen: endpoint did not bind")
        return outcome


class DatagramListener(Listener):
    """A UDP port and its protocol."""

    def __init__(
        self,
        label: str,
        reactor: IReactorUDP,
        bind: str,
        port: int,
        protocol: DatagramProtocol,
        *,
        on_delay: Callable[[float], None] | None = None,
    ) -> None:
        super().__init__(label)
        self._reactor = reactor
        self._bind_address = bind
        self._port_number = port
        self._protocol = protocol
        self._on_delay = on_delay  # fed how long datagrams queued in the kernel

    def _bind(self) -> IListeningPort:
        try:
            return listen_udp(
                self._reactor,
                self._port_number,
                self._protocol,
                self._bind_address,
                65_535,
                on_delay=self._on_delay,
            )
        except CannotListenError as e:
            raise ListenError(f"{self.label} cannot listen: {e}") from None
