"""Twisted adapter: moves bytes and timers between a socket and a DeviceSession.

Thin on purpose (STYLE rule 9): every protocol decision is in ``session.py``.
What lives here is I/O policy: one timer on the injected clock, closing after
the last frame is flushed, aborting clients that stall the TLS handshake or
never read (send buffer cap), and reporting to the ``Hub``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast
from typing import Protocol as TypingProtocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IDelayedCall,
    IHandshakeListener,
    IPushProducer,
    IReactorTime,
    ISSLTransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from gateway.localpush.frames import FrameSpec
from gateway.localpush.hub import SessionInfo
from gateway.localpush.session import (
    Acked,
    AckTimedOut,
    CallEventReceived,
    DeviceSession,
    Event,
    HelloAccepted,
    SessionClosed,
    SessionSettings,
    State,
    random_id,
)
from gateway.localpush.timers import SessionTimers
from gateway.sockets import no_delay

if TYPE_CHECKING:
    from gateway.localpush.hub import Hub

__all__ = ["LocalPushProtocol"]


class _Transport(TypingProtocol):
    """What we use of a TCP/TLS transport (ITransport lacks the last two)."""

    def write(self, data: bytes) -> None: ...
    def loseConnection(self) -> None: ...
    def abortConnection(self) -> None: ...
    def getPeer(self) -> Any: ...
    def registerProducer(self, producer: Any, streaming: bool) -> None: ...
    def unregisterProducer(self) -> None: ...


@implementer(IHandshakeListener, IPushProducer)
class LocalPushProtocol(Protocol):
    """One device connection; also the hub's ``SessionHandle`` for it."""

    log = Logger()

    def __init__(
        self,
        *,
        settings: SessionSettings,
        secret: bytes,
        hub: Hub,
        clock: IReactorTime,
        id_factory: Callable[[], str] = random_id,
        timers: SessionTimers | None = None,
    ) -> None:
        self._settings = settings
        self._secret = secret
        self._hub = hub
        self._clock = clock
        self._id_factory = id_factory
        self._timers = timers if timers is not None else SessionTimers(clock)
        self._core: DeviceSession | None = None
        # The core's next deadline as set on the shared timers (token 0: none).
        self._timer = 0
        self._timer_at = 0.0
        self._abort_timer: IDelayedCall | None = None
        self._tls = False
        self._tls_up = False
        self._up = False
        self._closing = False
        self._lost = False
        self._paused = False
        self._written_while_paused = 0
        self._peer = ""
        # Made on first use: most sessions never have a waiter (only shutdown).
        self._closed_waiters: list[Deferred[None]] | None = None

    @property
    def _transport(self) -> _Transport:
        assert self.transport is not None
        return cast(_Transport, self.transport)

    # SessionHandle ---------------------------------------------------------------

    @property
    def device_id(self) -> str | None:
        """The device, once its hello was accepted."""
        return self._core.device_id if self._core is not None else None

    @property
    def session_id(self) -> str | None:
        """The session id sent in welcome."""
        return self._core.session_id if self._core is not None else None

    @property
    def is_open(self) -> bool:
        """True while frames can still be sent on this connection."""
        return (
            self._core is not None
            and self._core.state is State.OPEN
            and not self._closing
            and not self._lost
        )

    def send_frame(self, spec: FrameSpec, ack_timeout: float | None) -> str:
        """Send a call/call_cancel/message frame; LocalProtocolError if we can't."""
        assert self._core is not None
        frame_id = self._core.send(spec, self._clock.seconds(), ack_timeout)
        self._after([])
        return frame_id

    def send_goaway(self, reason: str, reconnect_after_ms: int) -> None:
        """Send goaway and close after it is flushed."""
        if self._core is None:
            return
        self._after(self._core.send_goaway(reason, reconnect_after_ms))

    def when_closed(self) -> Deferred[None]:
        """Fires once the connection is gone."""
        if self._lost:
            return succeed(None)
        d: Deferred[None] = Deferred()
        if self._closed_waiters is None:
            self._closed_waiters = []
        self._closed_waiters.append(d)
        return d

    # Twisted callbacks -------------------------------------------------------------

    def connectionMade(self) -> None:
        """TCP accept: the handshake timer (covering TLS) starts now."""
        peer = self._transport.getPeer()
        self._peer = str(getattr(peer, "host", peer))
        no_delay(self.transport)
        self._tls = ISSLTransport.providedBy(self.transport)
        self._core = DeviceSession(
            self._settings,
            self._secret,
            self._clock.seconds(),
            id_factory=self._id_factory,
        )
        self._transport.registerProducer(self, True)
        self._schedule()

    def handshakeCompleted(self) -> None:
        """TLS is up: a handshake timeout from now on gets an error frame."""
        self._tls_up = True

    def dataReceived(self, data: bytes) -> None:
        """Feed the core; act on its events; write what it queued."""
        if self._core is None or self._closing:
            return
        try:
            events = self._core.receive_data(data, self._clock.seconds())
        except Exception:  # noqa: BLE001 - logged; only this session is ended
            # A bug in the core must not take more than this session with it.
            self.log.failure("Local push session from {peer} failed", peer=self._peer)
            events = self._core.send_error("internal", "internal error")
        self._after(events)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """End the session (if the core had not) and tell the hub."""
        self._lost = True
        self._timers.cancel(self._timer)
        self._timer = 0
        if self._abort_timer is not None and self._abort_timer.active():
            self._abort_timer.cancel()
        self._abort_timer = None
        if self._core is not None:
            self._dispatch(self._core.connection_lost(self._clock.seconds()))
        waiters, self._closed_waiters = self._closed_waiters or [], None
        for d in waiters:
            d.callback(None)

    # IPushProducer: the transport tells us when its send buffer is full ----------

    def pauseProducing(self) -> None:
        """The client is not reading fast enough: start counting queued bytes."""
        self._paused = True
        self._written_while_paused = 0

    def resumeProducing(self) -> None:
        """The transport drained its buffer."""
        self._paused = False
        self._written_while_paused = 0

    def stopProducing(self) -> None:
        """The transport is going away; connectionLost does the cleanup."""

    # Internals -----------------------------------------------------------------

    def _after(self, events: list[Event]) -> None:
        """Handle core events, then flush and reschedule, then maybe close."""
        if events:
            self._dispatch(events)
        self._flush()
        if self._lost:
            return
        assert self._core is not None
        if self._core.should_close:
            self._close()
        else:
            self._schedule()

    def _dispatch(self, events: list[Event]) -> None:
        assert self._core is not None
        for event in events:
            if isinstance(event, HelloAccepted):
                self._up = True
                info = SessionInfo(
                    session_id=event.session_id,
                    device_id=event.hello.device_id,
                    hello=event.hello,
                    claims=event.claims,
                    connected_at=self._clock.seconds(),
                    peer=self._peer,
                )
                self._flush()  # welcome goes out before anything the hub sends
                self._hub.session_up(self, info)
            elif isinstance(event, Acked):
                self._hub.frame_acked(self, event.frame_id)
            elif isinstance(event, AckTimedOut):
                self._hub.frame_timed_out(self, event.frame_id)
            elif isinstance(event, CallEventReceived):
                self._hub.call_event(self, event.call_id, event.event)
            elif isinstance(event, SessionClosed):
                self._on_closed(event)

    def _on_closed(self, event: SessionClosed) -> None:
        reason = event.code or event.reason
        self.log.info(
            "Local push session from {peer} closed: {reason}",
            peer=self._peer,
            device_id=self.device_id,
            reason=reason,
        )
        if self._up:
            self._up = False
            self._hub.session_down(self, reason)

    def _flush(self) -> None:
        if self._core is None or self._lost:
            return
        data = self._core.data_to_send()
        if not data:
            return
        if self._tls_stalled():
            return  # nobody to tell: the error frame cannot reach the client
        self._transport.write(data)
        if self._paused:
            self._written_while_paused += len(data)
            if self._written_while_paused > self._settings.send_buffer_limit:
                self._drop("send buffer over limit")

    def _tls_stalled(self) -> bool:
        return self._tls and not self._tls_up

    def _schedule(self) -> None:
        assert self._core is not None
        deadline = self._core.next_deadline()
        if self._timer:
            # Most frames push the idle deadline later: keep the earlier timer,
            # which finds nothing due when it fires and re-arms, rather than
            # move it on every frame.
            if deadline is None or self._timer_at <= deadline:
                return
            self._timers.cancel(self._timer)
            self._timer = 0
        if deadline is not None:
            self._timer = self._timers.set(self, deadline)
            self._timer_at = deadline

    def on_deadline(self) -> None:
        """The core's next deadline passed (``SessionTimers``): let it tick."""
        self._timer = 0
        if self._core is None or self._lost:
            return
        self._after(self._core.tick(self._clock.seconds()))

    def _close(self) -> None:
        """Graceful close after the last frame; abort if it does not finish."""
        if self._closing or self._lost:
            return
        self._closing = True
        if self._tls_stalled():
            self._transport.abortConnection()
            return
        # TLS postpones its close_notify while a producer is registered.
        self._transport.unregisterProducer()
        self._transport.loseConnection()
        self._abort_timer = self._clock.callLater(
            self._settings.close_timeout_s, self._abort
        )

    def _drop(self, why: str) -> None:
        """Abort now: end the session in the core, then the socket."""
        self.log.warn(
            "Dropping local push session from {peer}: {why}",
            peer=self._peer,
            device_id=self.device_id,
            why=why,
        )
        assert self._core is not None
        self._dispatch(self._core.connection_lost(self._clock.seconds()))
        self._abort()

    def _abort(self) -> None:
        self._abort_timer = None
        self._closing = True
        if not self._lost and self.transport is not None:
            self._transport.abortConnection()
