"""SIP over UDP, TCP and TLS: thin Twisted adapters around the sans-IO core.

``SipServer`` owns the transaction layer (``gateway.sip``), runs its one
timer, parses what the transports hand it and sends what the layer returns
to where RFC 3261 18.2.2 says. The protocols below only move bytes. Bad
input gets a 400 where a response can be routed and is dropped otherwise;
nothing a peer sends reaches another peer's transactions.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Hashable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from gateway.sip import (
    PONG,
    Absorbed,
    Action,
    FramedMessage,
    FramingError,
    NewRequest,
    Ping,
    Request,
    Response,
    ResponseRoute,
    Send,
    SipParseError,
    StreamFramer,
    TransactionKey,
    TransactionLayer,
    TransactionTimeout,
    Transport,
    build_error_response,
    build_response,
    parse_message,
    route_response,
)
from gateway.sipserver.application import NO_PUSH_STATUS, SipApplication
from gateway.sockets import no_delay

__all__ = ["SipServer", "SipStreamFactory", "SipStreamProtocol", "SipUdpProtocol"]

PARTIAL_MESSAGE_TIMEOUT_S = 10.0
# After the transaction timer fires, the next firing is at least this much
# later: at a thousand calls a second, Timers I and J of about ten calls then
# share one reactor wake-up (and one DelayedCall) instead of one each. A
# timer is thus at most 10 ms late, well inside RFC 3261's 500 ms T1 scale.
TIMER_GAP_S = 0.01
# Asked for on the UDP socket so that bursts (a busy reactor turn) queue in
# the kernel instead of being dropped; Linux caps it at net.core.rmem_max.
UDP_RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024


class SipServer:
    """The transaction layer's driver; implements the application's Responder."""

    log = Logger()

    def __init__(
        self, clock: IReactorTime, layer: TransactionLayer, max_message_bytes: int
    ) -> None:
        self._clock = clock
        self._layer = layer
        self.max_message_bytes = max_message_bytes
        self.app: SipApplication | None = None
        self.udp: SipUdpProtocol | None = None
        self._timer: IDelayedCall | None = None
        self._timer_at = 0.0
        self._not_before = 0.0
        self._queued = -1  # the layer's timers_queued when last scheduled
        self.stats: dict[str, int] = {
            "received": 0,
            "bad": 0,
            "dropped": 0,
            "absorbed": 0,
            "responses_ignored": 0,
            "unroutable": 0,
            "send_errors": 0,
        }
        self.responses: dict[int, int] = {}

    @property
    def transactions(self) -> int:
        """Server transactions alive (pending, or waiting out Timer I/J)."""
        return len(self._layer)

    # -- from the transports -----------------------------------------------------

    def receive(
        self,
        data: bytes,
        transport: Transport,
        source: tuple[str, int],
        connection: Hashable | None = None,
    ) -> None:
        """One whole message from a datagram or a framed stream."""
        self.stats["received"] += 1
        try:
            message = parse_message(data, self.max_message_bytes)
        except SipParseError as error:
            self._bad(error, transport, source, connection)
            return
        if isinstance(message, Response):
            self.stats["responses_ignored"] += 1  # a UAS only: no client transactions
            return
        now = self._clock.seconds()
        try:
            actions = self._layer.receive(message, transport, source, now, connection)
        except Exception:  # noqa: BLE001 - a peer's message must never stop the server
            self.log.failure(
                "Transaction layer failed on {method}", method=message.method
            )
            return
        self._execute(actions)

    def _bad(
        self,
        error: SipParseError,
        transport: Transport,
        source: tuple[str, int],
        connection: Hashable | None,
    ) -> None:
        self.stats["bad"] += 1
        invite = error.raw is not None and error.raw.start_line.startswith("INVITE ")
        response = build_error_response(
            error, source=source, headers=(NO_PUSH_STATUS,) if invite else ()
        )
        route = (
            route_response(response.via[0], transport, connection)
            if response is not None and response.via
            else None
        )
        self.log.info(
            "Bad SIP message from {peer}: {reason}",
            peer=f"{source[0]}:{source[1]}",
            reason=str(error),
        )
        if response is None or route is None:
            self.stats["dropped"] += 1
            return
        self._count(response.status)
        self._send(route, response.to_bytes())

    # -- Responder ---------------------------------------------------------------

    def respond(self, key: TransactionKey, response: Response) -> None:
        """Send the application's response through its transaction."""
        self._count(response.status)
        self._execute(self._layer.respond(key, response, self._clock.seconds()))

    def find_invite_for_cancel(self, cancel: Request) -> TransactionKey | None:
        return self._layer.find_invite_for_cancel(cancel)

    # -- the loop ----------------------------------------------------------------

    def _execute(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                self._send(action.route, action.data)
            elif isinstance(action, NewRequest):
                self._new_request(action)
            elif isinstance(action, Absorbed):
                self.stats["absorbed"] += 1
            elif isinstance(action, TransactionTimeout):
                self.log.debug("Transaction {key} timed out", key=str(action.key))
        self._schedule()

    def _new_request(self, action: NewRequest) -> None:
        assert self.app is not None, "SipServer.app is set at assembly"
        try:
            self.app.handle(action.key, action.request, action.source)
        except Exception:  # noqa: BLE001 - answer 500, keep serving everyone else
            self.log.failure("Handling {method} failed", method=action.request.method)
            try:
                self.respond(
                    action.key, build_response(action.request, 500, to_tag="err")
                )
            except Exception:  # noqa: BLE001 - the transaction may have a final already
                self.log.failure("Could not send 500")

    def _send(self, route: ResponseRoute | None, data: bytes) -> None:
        if route is None:
            self.stats["unroutable"] += 1
            return
        if route.transport is Transport.UDP:
            if self.udp is None or not _is_ip(route.host):
                # Sent-by names are stamped with received=IP; anything else
                # would need RFC 3263 resolution, which we do not do.
                self.stats["unroutable"] += 1
                return
            address = (route.host.strip("[]"), route.port)
            try:
                self.udp.send(data, address)
            except OSError as e:
                # Too big for a datagram, a v6 peer on a v4 port, no buffer:
                # this message is lost (the peer retransmits), nothing else.
                self.stats["send_errors"] += 1
                self.log.warn(
                    "SIP UDP send to {host}:{port} failed: {error}",
                    host=address[0],
                    port=address[1],
                    error=str(e),
                )
            return
        connection = route.connection
        if isinstance(connection, SipStreamProtocol) and connection.connected:
            connection.send(data)
        else:
            self.stats["unroutable"] += 1  # the peer closed; we open no connections

    def _schedule(self) -> None:
        """Arm the one reactor timer for the layer's next deadline.

        Lazy: a timer armed early enough is left alone, even if the deadline
        it was armed for went away (an ACK stopped Timer G); it then fires,
        finds nothing due and re-arms. So a transaction's timers cost no
        DelayedCall churn of their own.
        """
        queued = self._layer.timers_queued
        if self._timer is not None and queued == self._queued:
            return  # no new timer: the armed one is early enough
        self._queued = queued
        deadline = self._layer.next_deadline()
        if deadline is None:
            return
        at = max(deadline, self._not_before)
        if self._timer is not None:
            if self._timer_at <= at:
                return
            self._timer.cancel()
        self._timer, self._timer_at = (
            self._clock.callLater(max(0.0, at - self._clock.seconds()), self._tick),
            at,
        )

    def _tick(self) -> None:
        now = self._clock.seconds()
        self._timer, self._not_before = None, now + TIMER_GAP_S
        self._execute(self._layer.tick(now))

    def stop(self) -> None:
        """Drop the timer (service stop)."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _count(self, status: int) -> None:
        self.responses[status] = self.responses.get(status, 0) + 1


_IP_CACHE: dict[str, bool] = {}
_IP_CACHE_MAX = 4096


def _is_ip(host: str) -> bool:
    """Whether a route's host is an IP literal; cached, as every response
    asks it and a gateway answers few distinct peers."""
    known = _IP_CACHE.get(host)
    if known is not None:
        return known
    try:
        ipaddress.ip_address(host.strip("[]"))
        result = True
    except ValueError:
        result = False
    if len(_IP_CACHE) < _IP_CACHE_MAX:
        _IP_CACHE[host] = result
    return result


class SipUdpProtocol(DatagramProtocol):
    """One datagram, one message (RFC 3261 18.3)."""

    noisy = False

    def __init__(self, server: SipServer) -> None:
        self.server = server

    def startProtocol(self) -> None:
        sock = getattr(self.transport, "socket", None)
        if sock is None:
            return
        try:
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER_BYTES
            )
        except OSError as e:
            self.server.log.warn("SIP UDP receive buffer not raised: {e}", e=str(e))

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if not datagram.strip(b"\r\n"):
            return  # keep-alive
        self.server.receive(datagram, Transport.UDP, (addr[0], addr[1]))

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        """``sendto`` on the port's socket, as ``Port.write`` ends up doing.

        ``SipServer._send`` only routes to IP literals, so the port's three
        address checks per datagram (about 4 us) are skipped. ECONNREFUSED (an
        earlier datagram's ICMP error) is ignored, as ``Port.write`` does;
        any other ``OSError`` propagates, and ``SipServer._send`` counts and
        logs it.
        """
        port: Any = self.transport
        if port is None:
            return
        try:  # noqa: SIM105 - cheaper than contextlib.suppress, per datagram
            port.getHandle().sendto(data, addr)
        except ConnectionRefusedError:
            pass


class SipStreamProtocol(Protocol):
    """A TCP or TLS connection: Content-Length framing, idle and slow-loris
    timeouts, CRLF keep-alive pings answered."""

    log = Logger()

    def __init__(self, factory: SipStreamFactory) -> None:
        self.factory = factory
        self.framer = StreamFramer(
            max_header_bytes=min(factory.server.max_message_bytes, 65_536),
            max_content_length=factory.server.max_message_bytes,
        )
        self._idle: IDelayedCall | None = None
        self._partial: IDelayedCall | None = None
        self.peer: tuple[str, int] = ("", 0)

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()  # type: ignore[union-attr]
        self.peer = (getattr(peer, "host", ""), getattr(peer, "port", 0))
        no_delay(self.transport)
        self.factory.open += 1
        self._idle = self.factory.clock.callLater(
            self.factory.idle_timeout_s, self._close, "idle"
        )

    def dataReceived(self, data: bytes) -> None:
        for frame in self.framer.feed(data):
            if isinstance(frame, FramedMessage):
                self._restart_idle()
                self.factory.server.receive(
                    frame.data, self.factory.kind, self.peer, self
                )
            elif isinstance(frame, Ping):
                self.send(PONG)
            elif isinstance(frame, FramingError):
                self.log.info(
                    "Closing SIP stream from {peer}: {reason}",
                    peer=f"{self.peer[0]}:{self.peer[1]}",
                    reason=frame.reason,
                )
                self.factory.server.stats["bad"] += 1
                self._close("framing")
                return
        self._watch_partial()

    def send(self, data: bytes) -> None:
        if self.connected and self.transport is not None:
            self.transport.write(data)

    def _restart_idle(self) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.reset(self.factory.idle_timeout_s)

    def _watch_partial(self) -> None:
        """A message must complete within a bound (slow-loris peers)."""
        if self.framer.buffered and self._partial is None:
            self._partial = self.factory.clock.callLater(
                self.factory.message_timeout_s, self._close, "incomplete message"
            )
        elif not self.framer.buffered and self._partial is not None:
            if self._partial.active():
                self._partial.cancel()
            self._partial = None

    def _close(self, why: str) -> None:
        self.log.debug("Closing SIP stream: {why}", why=why)
        if self.transport is not None:
            self.transport.loseConnection()
            abort = getattr(self.transport, "abortConnection", None)
            if why != "framing" and abort is not None:
                abort()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.factory.open -= 1
        for timer in (self._idle, self._partial):
            if timer is not None and timer.active():
                timer.cancel()
        self._idle = self._partial = None


class SipStreamFactory(Factory):
    """Shared settings of every SIP stream connection of one transport."""

    noisy = False

    def __init__(
        self,
        server: SipServer,
        kind: Transport,
        clock: IReactorTime,
        *,
        idle_timeout_s: float,
        max_connections: int,
        message_timeout_s: float = PARTIAL_MESSAGE_TIMEOUT_S,
    ) -> None:
        self.server = server
        self.kind = kind
        self.clock = clock
        self.idle_timeout_s = idle_timeout_s
        self.message_timeout_s = message_timeout_s
        self.max_connections = max_connections
        self.open = 0

    def buildProtocol(self, addr: Any) -> Protocol | None:
        if self.open >= self.max_connections:
            return None  # refused: Twisted closes the socket
        return SipStreamProtocol(self)
