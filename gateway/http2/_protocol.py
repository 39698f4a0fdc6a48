"""Twisted adapter for one HTTP/2 client connection.

It only moves bytes between the TLS transport and :class:`ClientConnection`,
runs the timers (keep-alive PING, idle close, close grace) and hands the
connection's events to the exchanges and to its owner (the host pool).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Protocol

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IDelayedCall,
    IHandshakeListener,
    INegotiated,
    IReactorTime,
    ITransport,
)
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from gateway.http2._connection import (
    ClientConnection,
    ClientEvent,
    CloseConnection,
    ConnectionUnusable,
    PingAcknowledged,
    RequestFailed,
    ResponseComplete,
    ResponseData,
    ResponseHeaders,
    SettingsReceived,
)
from gateway.http2._errors import (
    ConnectFailedError,
    H2ClientError,
    NegotiationError,
)
from gateway.sockets import no_delay

if TYPE_CHECKING:
    from gateway.http2._exchange import Exchange

__all__ = ["ConnectionOwner", "ConnectionSettings", "H2ClientProtocol"]


@attrs.frozen(kw_only=True)
class ConnectionSettings:
    """Per-connection tunables, shared by every connection of an agent."""

    max_concurrent_streams: int = 1000
    max_queued: int = 10000
    max_response_size: int = 1024 * 1024
    ping_interval: float | None = 60.0
    ping_timeout: float = 20.0
    idle_timeout: float | None = None
    close_grace: float = 5.0


class ConnectionOwner(Protocol):
    """What a connection reports to (the per-host pool)."""

    def connection_unusable(self, connection: H2ClientProtocol) -> None:
        """No new requests may go to ``connection``."""

    def connection_closed(self, connection: H2ClientProtocol, healthy: bool) -> None:
        """``connection`` is gone; ``healthy`` if it ever delivered a response."""

    def retry(self, exchange: Exchange, error: H2ClientError) -> None:
        """``exchange`` was not processed by the server; send it elsewhere."""


@implementer(IHandshakeListener)
class H2ClientProtocol(TwistedProtocol):
    """One TLS connection speaking HTTP/2 as a client."""

    log = Logger()

    def __init__(
        self,
        *,
        clock: IReactorTime,
        owner: ConnectionOwner,
        settings: ConnectionSettings,
        peer: str,
    ) -> None:
        self._clock = clock
        self._owner = owner
        self._settings = settings
        self.peer = peer
        self._core: ClientConnection[Exchange] = ClientConnection(
            max_concurrent_streams=settings.max_concurrent_streams,
            max_queued=settings.max_queued,
            max_response_size=settings.max_response_size,
        )
        self.ready: Deferred[H2ClientProtocol] = Deferred()
        self._ready_done = False
        self._closed_waiters: list[Deferred[None]] = []
        self._lost = False
        self._closing = False
        self._receiving = False
        self._healthy = False
        self._close_reason: str | None = None
        self._last_received = clock.seconds()
        self._ping_call: IDelayedCall | None = None
        self._ping_deadline: IDelayedCall | None = None
        self._idle_call: IDelayedCall | None = None
        self._abort_call: IDelayedCall | None = None
        self.tunnel: TwistedProtocol | None = None  # set when behind a proxy

    # -- state seen by the pool ---------------------------------------------

    @property
    def usable(self) -> bool:
        """Whether the pool may submit more requests here."""
        return (
            self._ready_done
            and not self._lost
            and not self._closing
            and self._core.usable
        )

    @property
    def in_flight(self) -> int:
        """Requests running or queued on this connection."""
        return self._core.in_flight

    # -- connection set-up ------------------------------------------------

    def handshakeCompleted(self) -> None:
        """TLS is up: insist on ALPN h2, then send the connection preface."""
        if self._ready_done:
            return  # set-up already failed (timeout, close)
        assert self.transport is not None
        negotiated = INegotiated(self.transport).negotiatedProtocol
        if negotiated != b"h2":
            self.fail_connect(
                NegotiationError(
                    f"{self.peer} did not negotiate HTTP/2 over ALPN "
                    f"(got {negotiated!r})"
                )
            )
            return
        no_delay(self.transport)  # requests go out in the turn they are made
        self._core.initiate()
        self._flush()
        self._ready_done = True
        self._schedule_ping()
        self._schedule_idle()
        self.log.debug("HTTP/2 connection to {peer} ready", peer=self.peer)
        self.ready.callback(self)

    def fail_connect(self, error: ConnectFailedError) -> None:
        """Set-up failed (TCP, proxy, TLS, ALPN or timeout): report and drop."""
        if not self._ready_done:
            self._ready_done = True
            self._lost = True
            self.ready.errback(error)
        self._abort_transport()

    def never_connected(self, error: ConnectFailedError) -> None:
        """No TLS transport will ever come (TCP or tunnel failed): wrap up."""
        self.fail_connect(error)
        if self.transport is None:
            self._lost = True
            waiters, self._closed_waiters = self._closed_waiters, []
            for d in waiters:
                d.callback(None)

    # -- requests -----------------------------------------------------------

    def submit(self, exchange: Exchange) -> None:
        """Start ``exchange`` here; may raise ``QueueFullError``."""
        self._core.submit(exchange, exchange.h2_headers, exchange.body, clean=True)
        exchange.protocol = self
        self._cancel_idle()
        self._flush_soon()
        self._handle(self._core.take_events())

    def cancel(self, exchange: Exchange) -> None:
        """Drop ``exchange`` (caller gave up): RST_STREAM CANCEL if it started."""
        self._core.cancel(exchange)
        self._flush_soon()
        self._handle(self._core.take_events())

    def close(self) -> Deferred[None]:
        """GOAWAY, fail what is in flight, close; fires once the socket is gone."""
        d: Deferred[None] = Deferred()
        if self._lost:
            d.callback(None)
            return d
        self._closed_waiters.append(d)
        if not self._ready_done:
            self.fail_connect(
                ConnectFailedError("HTTP/2 agent closed while connecting")
            )
            return d
        self._close_reason = "closed locally"
        self._handle(self._core.close())
        return d

    # -- bytes ----------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """Feed the core and act on its events."""
        if self._lost or not self._ready_done:
            return  # set-up failed or not finished: nothing to parse yet
        self._last_received = self._clock.seconds()
        events = self._core.receive_data(data)
        # Requests started while these events are handled (the next push,
        # from a response's callback) go out with this batch's own frames, in
        # one write: one TLS record and one send for the batch, not one each.
        self._receiving = True
        try:
            self._handle(events)
        finally:
            self._receiving = False
        self._flush()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Fail whatever is still in flight and tell the pool."""
        self._lost = True
        for call in (
            self._ping_call,
            self._ping_deadline,
            self._idle_call,
            self._abort_call,
        ):
            if call is not None and call.active():
                call.cancel()
        if not self._ready_done:
            self._ready_done = True
            self.ready.errback(
                ConnectFailedError(
                    f"connection to {self.peer} closed during set-up: "
                    f"{reason.getErrorMessage()}"
                )
            )
        why = self._close_reason or reason.getErrorMessage()
        self._handle(self._core.connection_lost(why))
        self._owner.connection_closed(self, self._healthy)
        waiters, self._closed_waiters = self._closed_waiters, []
        for d in waiters:
            d.callback(None)

    def _flush_soon(self) -> None:
        """Write now, unless ``dataReceived`` is handling a batch: it writes
        once when done."""
        if not self._receiving:
            self._flush()

    def _flush(self) -> None:
        data = self._core.data_to_send()
        if data and self.transport is not None and not self._lost:
            self.transport.write(data)

    # -- events -----------------------------------------------------------

    def _handle(self, events: list[ClientEvent[Exchange]]) -> None:
        for event in events:
            if isinstance(event, ResponseHeaders):
                self._healthy = True
                event.key.headers_received(event.status, event.headers)
            elif isinstance(event, ResponseData):
                event.key.data_received(event.data)
            elif isinstance(event, ResponseComplete):
                event.key.protocol = None
                event.key.complete()
            elif isinstance(event, RequestFailed):
                event.key.protocol = None
                if event.retry:
                    self._owner.retry(event.key, event.error)
                else:
                    event.key.fail(event.error)
            elif isinstance(event, SettingsReceived):
                self.log.debug(
                    "{peer} allows {streams} concurrent streams",
                    peer=self.peer,
                    streams=event.max_concurrent_streams,
                )
            elif isinstance(event, PingAcknowledged):
                if self._ping_deadline is not None and self._ping_deadline.active():
                    self._ping_deadline.cancel()
                self._ping_deadline = None
            elif isinstance(event, ConnectionUnusable):
                self.log.info(
                    "HTTP/2 connection to {peer} retired: {reason}",
                    peer=self.peer,
                    reason=str(event.reason),
                )
                self._owner.connection_unusable(self)
            elif isinstance(event, CloseConnection):
                if event.reason is not None:
                    self._close_reason = str(event.reason)
                    self.log.warn(
                        "Closing HTTP/2 connection to {peer}: {reason}",
                        peer=self.peer,
                        reason=str(event.reason),
                    )
                self._flush()
                self._lose_connection()
        self._schedule_idle()

    def _lose_connection(self) -> None:
        """Close after writing pending bytes; abort if the peer lingers."""
        if self.transport is None or self._lost or self._closing:
            return
        self._closing = True
        self.transport.loseConnection()
        if self._abort_call is None:
            self._abort_call = self._clock.callLater(
                self._settings.close_grace, self._abort_transport
            )

    def _abort_transport(self) -> None:
        self._abort_call = None
        if self.tunnel is not None and self.tunnel.transport is not None:
            abort_transport(self.tunnel.transport)
        elif self.transport is not None:
            abort_transport(self.transport)

    # -- timers -------------------------------------------------------------

    def _schedule_ping(self) -> None:
        interval = self._settings.ping_interval
        if interval is None or self._lost:
            return
        self._ping_call = self._clock.callLater(interval, self._maybe_ping)

    def _maybe_ping(self) -> None:
        """PING when nothing arrived for ``ping_interval``; close if unanswered."""
        self._ping_call = None
        interval = self._settings.ping_interval
        assert interval is not None
        quiet = self._clock.seconds() - self._last_received
        if quiet < interval:
            self._ping_call = self._clock.callLater(interval - quiet, self._maybe_ping)
            return
        if self._ping_deadline is None:
            self._core.ping(os.urandom(8))
            self._flush()
            self._ping_deadline = self._clock.callLater(
                self._settings.ping_timeout, self._ping_timed_out
            )
        self._schedule_ping()

    def _ping_timed_out(self) -> None:
        self._ping_deadline = None
        self._close_reason = "keep-alive PING unanswered"
        self.log.warn(
            "HTTP/2 connection to {peer} did not answer PING within {timeout}s",
            peer=self.peer,
            timeout=self._settings.ping_timeout,
        )
        self._abort_transport()

    def _schedule_idle(self) -> None:
        timeout = self._settings.idle_timeout
        if (
            timeout is None
            or self._lost
            or self._closing
            or not self._ready_done
            or self._core.in_flight
            or self._idle_call is not None
        ):
            return
        self._idle_call = self._clock.callLater(timeout, self._idle_close)

    def _cancel_idle(self) -> None:
        if self._idle_call is not None:
            if self._idle_call.active():
                self._idle_call.cancel()
            self._idle_call = None

    def _idle_close(self) -> None:
        self._idle_call = None
        if self._core.in_flight or self._lost:
            return
        self.log.debug("Closing idle HTTP/2 connection to {peer}", peer=self.peer)
        self._owner.connection_unusable(self)
        self._close_reason = "idle"
        self._handle(self._core.close())


def abort_transport(transport: ITransport) -> None:
    """Drop a connection now; TLS wrappers have ``abortConnection`` undeclared."""
    abort = getattr(transport, "abortConnection", None)
    if callable(abort):
        abort()
    else:
        transport.loseConnection()
