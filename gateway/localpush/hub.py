"""The local-push hub: the gateway's one entry point to connected devices.

Owns the map device_id -> live session, turns acks and timeouts into
``DeliveryResult`` Deferreds, replaces a device's old session by its new one,
replays stored messages on session up, and drains every session on shutdown.
It never touches sockets: sessions reach it through ``SessionHandle`` (the
Protocol adapter implements it), persistence through ``DeviceDirectory``.
"""

from __future__ import annotations

from typing import Any, Protocol

import attrs
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from gateway.devicetoken import DeviceClaims
from gateway.localpush.codec import LocalProtocolError
from gateway.localpush.frames import (
    CallCancelFrame,
    CallFrame,
    FrameSpec,
    Hello,
    MessageFrame,
    Party,
)
from gateway.observers import guard as _guard

__all__ = [
    "ACK_TIMEOUT",
    "FRAME_TOO_LARGE",
    "NO_SESSION",
    "REPLACED",
    "SESSION_DIED",
    "DeliveryResult",
    "DeviceDirectory",
    "FrameObserver",
    "Hub",
    "InMemoryDeviceDirectory",
    "SessionHandle",
    "SessionInfo",
    "SessionListener",
    "StoredMessage",
]


NO_SESSION = "no_session"
SESSION_DIED = "session_died"
ACK_TIMEOUT = "ack_timeout"
REPLACED = "replaced"
FRAME_TOO_LARGE = "frame_too_large"


@attrs.frozen(kw_only=True)
class SessionInfo:
    """A device session that passed its hello."""

    session_id: str
    device_id: str
    hello: Hello
    claims: DeviceClaims
    connected_at: float
    peer: str = ""


@attrs.frozen(kw_only=True)
class DeliveryResult:
    """Whether a frame was acked; ``reason`` says why not (module constants)."""

    delivered: bool
    reason: str | None = None
    session_id: str | None = None
    frame_id: str | None = None


@attrs.frozen(kw_only=True)
class StoredMessage:
    """A message kept until the device acks it or it expires (POSIX seconds)."""

    message_id: str
    sender: Party
    body: str
    sent_at: float
    expires_at: float

    def to_frame(self) -> MessageFrame:
        """The ``message`` frame that carries it."""
        return MessageFrame(
            message_id=self.message_id,
            sender=self.sender,
            body=self.body,
            sent_at=self.sent_at,
        )


class DeviceDirectory(Protocol):
    """Persistence the hub needs; the SQLite store implements it elsewhere."""

    def device_hello(self, info: SessionInfo) -> None:
        """Record a session up: tokens, topic, env, locale, version, AORs, seen."""

    def pending_messages(self, device_id: str, now: float) -> list[StoredMessage]:
        """Unacked, unexpired messages for the device, oldest first."""
        ...

    def message_acked(self, device_id: str, message_id: str) -> None:
        """The device acked the message: it need not be sent again."""


class SessionListener(Protocol):
    """Observers of session life (resume replay, call engine, metrics)."""

    def on_session_up(self, device_id: str, info: SessionInfo) -> None:
        """A session for ``device_id`` is open (after ``welcome``)."""

    def on_session_down(self, device_id: str, reason: str) -> None:
        """The device's current session ended (``replaced``, ``idle``, ...)."""

    def on_call_event(self, device_id: str, call_id: str, event: str) -> None:
        """The device sent a ``call_event``; unknown or ended calls are ignored."""


class FrameObserver(Protocol):
    """Hears how every frame handed to ``Hub.deliver`` ended (metrics)."""

    def on_frame_result(
        self, device_id: str, frame: str, result: DeliveryResult, seconds: float
    ) -> None:
        """``frame`` (``call``, ``call_cancel``, ``message``, ``other``) ended
        with ``result``, ``seconds`` after its ``deliver`` call."""


# Frame names for observers, by spec type: closed, so usable as a label.
_FRAME_NAMES: dict[type, str] = {
    CallFrame: "call",
    CallCancelFrame: "call_cancel",
    MessageFrame: "message",
}


class SessionHandle(Protocol):
    """What the hub needs from one live session; the Protocol adapter has it."""

    @property
    def device_id(self) -> str | None:
        """The device, once its hello was accepted."""
        ...

    @property
    def is_open(self) -> bool:
        """True while frames can still be sent."""
        ...

    def send_frame(self, spec: FrameSpec, ack_timeout: float | None) -> str:
        """Send a frame needing an ack; return its frame id (LocalProtocolError)."""
        ...

    def send_goaway(self, reason: str, reconnect_after_ms: int) -> None:
        """Send goaway and close the session."""

    def when_closed(self) -> Deferred[None]:
        """Fires once the connection is gone."""
        ...


@attrs.define
class _Outstanding:
    # Each waiter with the time its ``deliver`` call began (for observers).
    waiters: list[tuple[Deferred[DeliveryResult], float]]
    message_id: str | None
    frame: str


_ACKED = "acked"
_TIMED_OUT = "timed_out"


@attrs.define(eq=False)
class _Live:
    handle: SessionHandle
    info: SessionInfo
    dead: bool = False
    outstanding: dict[str, _Outstanding] = attrs.field(factory=dict)
    # message_id -> frame id in flight, or _ACKED / _TIMED_OUT: a message is
    # sent at most once per session.
    messages: dict[str, str] = attrs.field(factory=dict)


class Hub:
    """Routes frames to device sessions and reports what was delivered."""

    log = Logger()

    def __init__(self, clock: IReactorTime, directory: DeviceDirectory) -> None:
        self._clock = clock
        self._directory = directory
        self._live: dict[str, _Live] = {}
        self._listeners: list[SessionListener] = []
        self._frame_observers: list[FrameObserver] = []
        self._shutdown_window_ms: int | None = None

    # Public API for the rest of the gateway ----------------------------------

    def add_listener(self, listener: SessionListener) -> None:
        """Be told about session up/down and call events."""
        self._listeners.append(listener)

    def remove_listener(self, listener: SessionListener) -> None:
        """Stop telling ``listener``."""
        self._listeners.remove(listener)

    def add_frame_observer(self, observer: FrameObserver) -> None:
        """Be told how each delivered frame ended (acked, timed out, ...)."""
        self._frame_observers.append(observer)

    def is_online(self, device_id: str) -> bool:
        """True if the device has an open session now."""
        live = self._live.get(device_id)
        return live is not None and live.handle.is_open

    def session_info(self, device_id: str) -> SessionInfo | None:
        """The device's current session, if any."""
        live = self._live.get(device_id)
        return live.info if live is not None else None

    @property
    def online_count(self) -> int:
        """Number of devices with a session (for metrics)."""
        return len(self._live)

    def deliver(
        self, device_id: str, spec: FrameSpec, ack_timeout: float | None = None
    ) -> Deferred[DeliveryResult]:
        """Send ``spec`` to the device's session; fire when acked or not.

        Never errbacks. A message (assumed already stored by the caller) that was
        already sent on this session is not sent again: the result follows the
        first attempt.
        """
        frame = _FRAME_NAMES.get(type(spec), "other")
        live = self._live.get(device_id)
        if live is None or not live.handle.is_open:
            return self._at_once(device_id, frame, delivered=False, reason=NO_SESSION)
        sid = live.info.session_id
        message_id = spec.message_id if isinstance(spec, MessageFrame) else None
        if message_id is not None and message_id in live.messages:
            state = live.messages[message_id]
            if state == _ACKED:
                return self._at_once(device_id, frame, delivered=True, session_id=sid)
            if state == _TIMED_OUT:
                return self._at_once(
                    device_id,
                    frame,
                    delivered=False,
                    reason=ACK_TIMEOUT,
                    session_id=sid,
                )
            d: Deferred[DeliveryResult] = Deferred()
            live.outstanding[state].waiters.append((d, self._clock.seconds()))
            return d
        began = self._clock.seconds()
        try:
            frame_id = live.handle.send_frame(spec, ack_timeout)
        except LocalProtocolError as e:
            self.log.warn(
                "Frame for {device_id} not sent: {error}",
                device_id=device_id,
                error=str(e),
            )
            return self._at_once(
                device_id,
                frame,
                delivered=False,
                reason=FRAME_TOO_LARGE,
                session_id=sid,
            )
        if live.dead:  # the write itself killed the session (send buffer cap)
            return self._at_once(
                device_id, frame, delivered=False, reason=SESSION_DIED, session_id=sid
            )
        d = Deferred()
        live.outstanding[frame_id] = _Outstanding(
            waiters=[(d, began)], message_id=message_id, frame=frame
        )
        if message_id is not None:
            live.messages[message_id] = frame_id
        return d

    def _at_once(
        self, device_id: str, frame: str, **fields: Any
    ) -> Deferred[DeliveryResult]:
        """A delivery decided without waiting: report it, then fire it."""
        result = DeliveryResult(**fields)
        if self._frame_observers:
            self._frame_result(device_id, frame, result, 0.0)
        return succeed(result)

    def _resolve(
        self, device_id: str, out: _Outstanding, result: DeliveryResult
    ) -> None:
        """Fire an outstanding frame's waiters, observers first (as they were
        first to hear of it when they wrapped ``deliver``)."""
        now = self._clock.seconds() if self._frame_observers else 0.0
        for d, began in out.waiters:
            if self._frame_observers:
                self._frame_result(device_id, out.frame, result, now - began)
            d.callback(result)

    def _frame_result(
        self, device_id: str, frame: str, result: DeliveryResult, seconds: float
    ) -> None:
        for observer in self._frame_observers:
            _guard(
                self,
                "on_frame_result",
                observer.on_frame_result,
                device_id,
                frame,
                result,
                seconds,
            )

    def shutdown(self, window_s: float) -> Deferred[None]:
        """Send goaway shutdown to every session, reconnects spread over the window.

        Fires when every connection is gone (the adapter aborts stragglers).
        """
        window_ms = max(0, int(window_s * 1000))
        self._shutdown_window_ms = window_ms
        lives = list(self._live.values())
        closed = [live.handle.when_closed() for live in lives]
        for i, live in enumerate(lives):
            live.handle.send_goaway("shutdown", window_ms * i // len(lives))
        self.log.info("Shutdown: goaway sent to {count} sessions", count=len(lives))
        done: Deferred[None] = gatherResults(closed).addCallback(lambda _: None)
        return done

    # Called by the session adapter -------------------------------------------

    def session_up(self, handle: SessionHandle, info: SessionInfo) -> None:
        """A session passed its hello: register it, replacing an older one."""
        device_id = info.device_id
        if self._shutdown_window_ms is not None:
            handle.send_goaway("shutdown", self._shutdown_window_ms)
            return
        old = self._live.get(device_id)
        live = _Live(handle=handle, info=info)
        if old is not None:
            self._retire(old, REPLACED)
            old.handle.send_goaway("replaced", 0)
        self._live[device_id] = live
        self.log.info(
            "Device {device_id} session {session_id} up from {peer}",
            device_id=device_id,
            session_id=info.session_id,
            peer=info.peer,
        )
        _guard(self, "directory.device_hello", self._directory.device_hello, info)
        for listener in list(self._listeners):
            if live.dead:
                return
            _guard(self, "on_session_up", listener.on_session_up, device_id, info)
        self._replay_messages(live)

    def frame_acked(self, handle: SessionHandle, frame_id: str) -> None:
        """The session got the ack for ``frame_id``."""
        self._settle(handle, frame_id, None)

    def frame_timed_out(self, handle: SessionHandle, frame_id: str) -> None:
        """The session gave up waiting for the ack of ``frame_id``."""
        self._settle(handle, frame_id, ACK_TIMEOUT)

    def _settle(
        self, handle: SessionHandle, frame_id: str, failure: str | None
    ) -> None:
        """Fire an outstanding frame's waiters: acked (``failure`` None) or not."""
        live = self._current(handle)
        if live is None:
            return
        out = live.outstanding.pop(frame_id, None)
        if out is None:
            return
        if out.message_id is not None:
            live.messages[out.message_id] = _ACKED if failure is None else _TIMED_OUT
            if failure is None:
                _guard(
                    self,
                    "directory.message_acked",
                    self._directory.message_acked,
                    live.info.device_id,
                    out.message_id,
                )
        result = DeliveryResult(
            delivered=failure is None,
            reason=failure,
            session_id=live.info.session_id,
            frame_id=frame_id,
        )
        self._resolve(live.info.device_id, out, result)

    def call_event(self, handle: SessionHandle, call_id: str, event: str) -> None:
        """Pass a device's call_event to the listeners."""
        live = self._current(handle)
        if live is None:
            return
        for listener in list(self._listeners):
            _guard(
                self,
                "on_call_event",
                listener.on_call_event,
                live.info.device_id,
                call_id,
                event,
            )

    def session_down(self, handle: SessionHandle, reason: str) -> None:
        """The session ended (``reason``: bye, connection_lost, idle, an error code)."""
        live = self._current(handle)
        if live is not None:
            self._retire(live, reason)

    # Internals --------------------------------------------------------------

    def _current(self, handle: SessionHandle) -> _Live | None:
        device_id = handle.device_id
        live = self._live.get(device_id) if device_id is not None else None
        if live is None or live.handle is not handle:
            return None  # stale: a replaced session, already retired
        return live

    def _retire(self, live: _Live, reason: str) -> None:
        """Forget the session first, then fail its waiters and tell listeners."""
        live.dead = True
        device_id = live.info.device_id
        if self._live.get(device_id) is live:
            del self._live[device_id]
        outstanding, live.outstanding = live.outstanding, {}
        self.log.info(
            "Device {device_id} session {session_id} down: {reason}",
            device_id=device_id,
            session_id=live.info.session_id,
            reason=reason,
        )
        why = REPLACED if reason == REPLACED else SESSION_DIED
        for frame_id, out in outstanding.items():
            result = DeliveryResult(
                delivered=False,
                reason=why,
                session_id=live.info.session_id,
                frame_id=frame_id,
            )
            self._resolve(device_id, out, result)
        for listener in list(self._listeners):
            _guard(self, "on_session_down", listener.on_session_down, device_id, reason)

    def _replay_messages(self, live: _Live) -> None:
        device_id = live.info.device_id
        pending = _guard(
            self,
            "directory.pending_messages",
            self._directory.pending_messages,
            device_id,
            self._clock.seconds(),
        )
        if pending is None:
            return
        for message in pending:
            if live.dead or not live.handle.is_open:
                return
            self.deliver(device_id, message.to_frame())


@attrs.define
class InMemoryDeviceDirectory:
    """A DeviceDirectory in a dict, for tests and dev mode."""

    hellos: dict[str, SessionInfo] = attrs.field(factory=dict)
    messages: dict[str, list[StoredMessage]] = attrs.field(factory=dict)

    def store_message(self, device_id: str, message: StoredMessage) -> None:
        """Keep a message for the device (what a caller does before deliver)."""
        self.messages.setdefault(device_id, []).append(message)

    def device_hello(self, info: SessionInfo) -> None:
        """Remember the latest hello per device."""
        self.hellos[info.device_id] = info

    def pending_messages(self, device_id: str, now: float) -> list[StoredMessage]:
        """Unexpired stored messages, oldest first."""
        kept = [m for m in self.messages.get(device_id, []) if m.expires_at > now]
        return sorted(kept, key=lambda m: m.sent_at)

    def message_acked(self, device_id: str, message_id: str) -> None:
        """Drop the acked message."""
        self.messages[device_id] = [
            m for m in self.messages.get(device_id, []) if m.message_id != message_id
        ]
