"""The LPP/1 device session state machine, one per connection (sans-IO).

Bytes and API calls in; bytes (``data_to_send``) and events out. Time enters as
``now`` and deadlines are reported by ``next_deadline`` so the adapter can run
one timer. All frame-driven transitions live in ``_TRANSITIONS``. Rules are
those of ``localpush.md``; choices where it is silent are in
``docs/localpush-notes.md``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from typing import Any

import attrs

from gateway.devicetoken import (
    DEVICE_ID_RE,
    DeviceClaims,
    DeviceTokenError,
    verify_device_token,
)
from gateway.ids import new_uuid4
from gateway.localpush.codec import (
    Frame,
    FrameDecoder,
    LocalProtocolError,
    RemoteProtocolError,
    encode_frame,
    encode_pong,
    format_time,
    simple_frame,
)
from gateway.localpush.frames import (
    APNS_ENVS,
    CALL_EVENTS,
    GOAWAY_REASONS,
    FrameSpec,
    Hello,
    to_wire,
)

__all__ = [
    "PROTOCOL_VERSION",
    "AckTimedOut",
    "Acked",
    "CallEventReceived",
    "DeviceSession",
    "Event",
    "HelloAccepted",
    "SessionClosed",
    "SessionSettings",
    "State",
    "random_id",
]

PROTOCOL_VERSION = 1
IDLE_FACTOR = 2.5
# Error codes after which the session stays open (localpush.md, "error").
_NON_FATAL = frozenset({"unknown_type", "unexpected_frame"})
_HEX_RE = re.compile(r"(?:[0-9A-Fa-f]{2}){1,200}")
_TOPIC_RE = re.compile(r"[A-Za-z0-9._-]{1,255}")
_MAX_TEXT = 64
_MAX_CALL_ID = 128
_MAX_ECHO_ID = 256


def _positive(_inst: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive")


@attrs.frozen(kw_only=True)
class SessionSettings:
    """Per-session limits and timers (mapped from the config file elsewhere)."""

    max_frame: int = attrs.field(default=16384, validator=_positive)
    heartbeat_s: int = attrs.field(default=30, validator=_positive)
    ack_timeout_s: float = attrs.field(default=3.0, validator=_positive)
    handshake_timeout_s: float = attrs.field(default=10.0, validator=_positive)
    rate_per_s: float = attrs.field(default=20.0, validator=_positive)
    rate_burst: int = attrs.field(default=50, validator=_positive)
    # Adapter only: bytes queued for a client that does not read before we drop it.
    send_buffer_limit: int = attrs.field(default=1 << 20, validator=_positive)
    # Adapter only: how long a graceful close may take before the socket is aborted.
    close_timeout_s: float = attrs.field(default=5.0, validator=_positive)

    @property
    def idle_timeout_s(self) -> float:
        """No frame received for this long means the session is dead."""
        return IDLE_FACTOR * self.heartbeat_s


# Events ---------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class HelloAccepted:
    """The hello was valid and ``welcome`` is queued."""

    session_id: str
    hello: Hello
    claims: DeviceClaims


@attrs.frozen(kw_only=True)
class Acked:
    """The client acknowledged frame ``frame_id`` in time."""

    frame_id: str


@attrs.frozen(kw_only=True)
class AckTimedOut:
    """Frame ``frame_id`` was not acked within its ack timeout: not delivered."""

    frame_id: str


@attrs.frozen(kw_only=True)
class CallEventReceived:
    """The device reported ``event`` (ringing/declined/answered/failed)."""

    call_id: str
    event: str


@attrs.frozen(kw_only=True)
class SessionClosed:
    """The session is over; the adapter closes the transport after flushing.

    ``reason`` is ``bye``, ``error`` (``code`` = the error code sent), ``goaway``
    (``code`` = the goaway reason) or ``connection_lost``. ``unacked`` are the
    ids of frames still waiting for an ack: none of them was delivered.
    """

    reason: str
    code: str | None = None
    unacked: tuple[str, ...] = ()


Event = HelloAccepted | Acked | AckTimedOut | CallEventReceived | SessionClosed


# State machine ----------------------------------------------------------------


class State(enum.Enum):
    """Session states; CLOSED means "flush and close", all input is then dropped."""

    HANDSHAKE = "handshake"
    OPEN = "open"
    CLOSED = "closed"


class _Kind(enum.Enum):
    HELLO = "hello"
    ACK = "ack"
    PING = "ping"
    PONG = "pong"
    CALL_EVENT = "call_event"
    BYE = "bye"
    SERVER_ONLY = "server_only"
    UNKNOWN = "unknown"


_KIND_OF_TYPE = {
    "hello": _Kind.HELLO,
    "ack": _Kind.ACK,
    "ping": _Kind.PING,
    "pong": _Kind.PONG,
    "call_event": _Kind.CALL_EVENT,
    "bye": _Kind.BYE,
    # Known types that only the server sends: wrong direction, not unknown.
    "welcome": _Kind.SERVER_ONLY,
    "call": _Kind.SERVER_ONLY,
    "call_cancel": _Kind.SERVER_ONLY,
    "message": _Kind.SERVER_ONLY,
    "goaway": _Kind.SERVER_ONLY,
    "error": _Kind.SERVER_ONLY,
}


class _HelloError(Exception):
    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra


class _TokenBucket:
    """Receive rate limit: ``rate`` frames/s sustained, ``burst`` at once."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._last = now

    def take(self, now: float) -> bool:
        elapsed = max(0.0, now - self._last)
        self._last = max(self._last, now)
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


#: A fresh UUID4 string, for session ids and frame ids.
random_id = new_uuid4


class DeviceSession:
    """One device connection's LPP/1 state: feed it bytes, ticks and sends."""

    def __init__(
        self,
        settings: SessionSettings,
        secret: bytes,
        now: float,
        *,
        id_factory: Callable[[], str] = random_id,
    ) -> None:
        self._settings = settings
        self._secret = secret
        self._new_id = id_factory
        self._decoder = FrameDecoder(settings.max_frame)
        self._state = State.HANDSHAKE
        self._started = now
        self._last_rx = now
        self._idle_timeout = settings.idle_timeout_s
        self._bucket = _TokenBucket(settings.rate_per_s, settings.rate_burst, now)
        self._out: list[bytes] = []
        self._events: list[Event] = []
        self._pending: dict[str, float] = {}  # frame id -> ack deadline
        self.session_id: str | None = None
        self.device_id: str | None = None

    # Inspection -------------------------------------------------------------

    @property
    def state(self) -> State:
        """Current state."""
        return self._state

    @property
    def should_close(self) -> bool:
        """True once the session is over: flush ``data_to_send`` and close."""
        return self._state is State.CLOSED

    @property
    def unacked(self) -> tuple[str, ...]:
        """Ids of sent frames still waiting for their ack."""
        return tuple(self._pending)

    def next_deadline(self) -> float | None:
        """When ``tick`` next has work to do, or None."""
        if self._state is State.HANDSHAKE:
            return self._started + self._settings.handshake_timeout_s
        if self._state is State.OPEN:
            idle = self._last_rx + self._idle_timeout
            if not self._pending:
                return idle
            return min(idle, *self._pending.values())
        return None

    def data_to_send(self) -> bytes:
        """Drain the bytes queued for the client; does no I/O."""
        data = b"".join(self._out)
        self._out.clear()
        return data

    # Inputs -----------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        """Feed received bytes (``b""`` = EOF); return the resulting events."""
        if self._state is State.CLOSED:
            return []
        if not data:
            return self.connection_lost(now)
        if self._state is State.OPEN and not self._decoder.buffered:
            simple = simple_frame(data, self._settings.max_frame)
            if simple is not None:
                return self._receive_simple(simple[0], simple[1], now)
        error: RemoteProtocolError | None = None
        try:
            frames = self._decoder.feed(data)
        except RemoteProtocolError as e:
            frames, error = list(e.frames), e
        for frame in frames:
            if self.should_close:  # a frame before this one ended the session
                break
            self._receive_frame(frame, now)
        if error is not None and not self.should_close:
            self._fail(error.code, error.message)
        return self._take_events()

    def tick(self, now: float) -> list[Event]:
        """Run the deadlines due at ``now``: handshake, ack and idle timeouts."""
        if self._state is State.HANDSHAKE:
            if now >= self._started + self._settings.handshake_timeout_s:
                self._fail("handshake_timeout", "no valid hello in time")
        elif self._state is State.OPEN:
            for frame_id, deadline in list(self._pending.items()):
                if deadline <= now:
                    del self._pending[frame_id]
                    self._events.append(AckTimedOut(frame_id=frame_id))
            if now >= self._last_rx + self._settings.idle_timeout_s:
                self._goaway("idle", 0)
        return self._take_events()

    def connection_lost(self, now: float) -> list[Event]:
        """The transport is gone (or EOF): end the session if it was not already."""
        if self._state is not State.CLOSED:
            self._close("connection_lost")
        return self._take_events()

    # API calls from the owner -------------------------------------------------

    def send(
        self, spec: FrameSpec, now: float, ack_timeout: float | None = None
    ) -> str:
        """Queue a call/call_cancel/message frame; return its frame id.

        Raises LocalProtocolError unless the session is open, or if the frame
        would exceed ``max_frame``.
        """
        self._require_open()
        frame_id = self._new_id()
        self._queue(to_wire(spec, frame_id))
        timeout = self._settings.ack_timeout_s if ack_timeout is None else ack_timeout
        self._pending[frame_id] = now + timeout
        return frame_id

    def send_ping(self) -> str:
        """Queue a server ping; the pong is not tracked (receiving it resets idle)."""
        self._require_open()
        ping_id = self._new_id()
        self._queue({"type": "ping", "id": ping_id})
        return ping_id

    def send_goaway(self, reason: str, reconnect_after_ms: int) -> list[Event]:
        """Queue ``goaway`` and close (shutdown/replaced); no-op once closed."""
        if reason not in GOAWAY_REASONS:
            raise LocalProtocolError(f"unknown goaway reason {reason!r}")
        if self._state is not State.CLOSED:
            self._goaway(reason, reconnect_after_ms)
        return self._take_events()

    def send_error(self, code: str, message: str) -> list[Event]:
        """Queue a fatal ``error`` (e.g. ``internal``) and close; no-op once closed."""
        if self._state is not State.CLOSED:
            self._fail(code, message)
        return self._take_events()

    # Frame handlers (reached only through _TRANSITIONS) ----------------------

    def _receive_frame(self, frame: Frame, now: float) -> None:
        self._last_rx = now
        if self._state is State.OPEN and not self._bucket.take(now):
            self._fail("rate_limited", "too many frames")
            return
        kind = _KIND_OF_TYPE.get(frame.type, _Kind.UNKNOWN)
        try:
            handler, next_state = _TRANSITIONS[(self._state, kind)]
        except KeyError:
            raise LocalProtocolError(
                f"no transition for {kind.value} in {self._state.value}"
            ) from None
        handler(self, frame, now)
        if self._state is not State.CLOSED:
            self._state = next_state

    def _receive_simple(self, kind: bytes, frame_id: bytes, now: float) -> list[Event]:
        """(OPEN, ping | pong | ack) of ``_TRANSITIONS`` without building a Frame.

        Same steps as ``_receive_frame`` + ``_on_ping``/``_on_pong``/``_on_ack``,
        same bytes and events out: a ping's id is echoed as ``encode_frame``
        would write it.
        """
        self._last_rx = now
        if not self._bucket.take(now):
            self._fail("rate_limited", "too many frames")
            return self._take_events()
        if kind == b"ping":
            self._out.append(encode_pong(frame_id))
        elif kind == b"ack":
            ack_id = frame_id.decode("ascii")
            if self._pending.pop(ack_id, None) is not None:
                return [Acked(frame_id=ack_id)]
        return []

    def _on_hello(self, frame: Frame, now: float) -> None:
        try:
            hello, token = _parse_hello(frame)
            try:
                claims = verify_device_token(
                    self._secret, token, hello.device_id, now=now
                )
            except DeviceTokenError as e:
                raise _HelloError("unauthorized", e.reason) from None
        except _HelloError as e:
            self._fail(e.code, e.message, **e.extra)
            return
        self.session_id = self._new_id()
        self.device_id = hello.device_id
        self._bucket = _TokenBucket(
            self._settings.rate_per_s, self._settings.rate_burst, now
        )
        self._queue(
            {
                "type": "welcome",
                "v": PROTOCOL_VERSION,
                "session_id": self.session_id,
                "heartbeat_s": self._settings.heartbeat_s,
                "max_frame": self._settings.max_frame,
                "server_time": format_time(now),
            }
        )
        self._events.append(
            HelloAccepted(session_id=self.session_id, hello=hello, claims=claims)
        )

    def _on_handshake_required(self, frame: Frame, now: float) -> None:
        self._fail("handshake_required", "the first frame must be hello")

    def _on_unexpected(self, frame: Frame, now: float) -> None:
        self._fail("unexpected_frame", f"{frame.type} not expected here")

    def _on_unknown(self, frame: Frame, now: float) -> None:
        self._fail("unknown_type", "unknown frame type")

    def _on_ack(self, frame: Frame, now: float) -> None:
        frame_id = frame.get("id")
        if not isinstance(frame_id, str):
            self._fail("bad_frame", "ack needs a string member id")
            return
        if self._pending.pop(frame_id, None) is not None:
            self._events.append(Acked(frame_id=frame_id))
        # A late ack or one for an unknown id is ignored.

    def _on_ping(self, frame: Frame, now: float) -> None:
        pong: dict[str, Any] = {"type": "pong"}
        ping_id = frame.get("id")
        if isinstance(ping_id, str) and len(ping_id) <= _MAX_ECHO_ID:
            pong["id"] = ping_id
        self._queue(pong)

    def _on_pong(self, frame: Frame, now: float) -> None:
        # Receiving any frame already reset the idle clock; nothing else to do.
        return

    def _on_call_event(self, frame: Frame, now: float) -> None:
        call_id = frame.get("call_id")
        event = frame.get("event")
        if not isinstance(call_id, str) or not 0 < len(call_id) <= _MAX_CALL_ID:
            self._fail("bad_frame", "call_event needs a string member call_id")
        elif not isinstance(event, str) or event not in CALL_EVENTS:
            self._fail("bad_frame", "call_event has an invalid member event")
        else:
            self._events.append(CallEventReceived(call_id=call_id, event=event))

    def _on_bye(self, frame: Frame, now: float) -> None:
        self._close("bye")

    # Helpers ----------------------------------------------------------------

    def _require_open(self) -> None:
        if self._state is not State.OPEN:
            raise LocalProtocolError(f"session is {self._state.value}, not open")

    def _queue(self, obj: dict[str, Any]) -> None:
        self._out.append(encode_frame(obj, self._settings.max_frame))

    def _fail(self, code: str, message: str, **extra: Any) -> None:
        self._queue({"type": "error", "code": code, "message": message, **extra})
        if code not in _NON_FATAL:
            self._close("error", code)

    def _goaway(self, reason: str, reconnect_after_ms: int) -> None:
        self._queue(
            {
                "type": "goaway",
                "reason": reason,
                "reconnect_after_ms": max(0, int(reconnect_after_ms)),
            }
        )
        self._close("goaway", reason)

    def _close(self, reason: str, code: str | None = None) -> None:
        self._state = State.CLOSED
        unacked = tuple(self._pending)
        self._pending.clear()
        self._events.append(SessionClosed(reason=reason, code=code, unacked=unacked))

    def _take_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events


_Handler = Callable[[DeviceSession, Frame, float], None]
_H, _O = State.HANDSHAKE, State.OPEN

# (state, kind of received frame) -> (handler, state after it unless it closed).
_TRANSITIONS: dict[tuple[State, _Kind], tuple[_Handler, State]] = {
    (_H, _Kind.HELLO): (DeviceSession._on_hello, _O),
    **{
        (_H, kind): (DeviceSession._on_handshake_required, _H)
        for kind in _Kind
        if kind is not _Kind.HELLO
    },
    (_O, _Kind.HELLO): (DeviceSession._on_unexpected, _O),
    (_O, _Kind.SERVER_ONLY): (DeviceSession._on_unexpected, _O),
    (_O, _Kind.UNKNOWN): (DeviceSession._on_unknown, _O),
    (_O, _Kind.ACK): (DeviceSession._on_ack, _O),
    (_O, _Kind.PING): (DeviceSession._on_ping, _O),
    (_O, _Kind.PONG): (DeviceSession._on_pong, _O),
    (_O, _Kind.CALL_EVENT): (DeviceSession._on_call_event, _O),
    (_O, _Kind.BYE): (DeviceSession._on_bye, _O),
}


# Hello validation ---------------------------------------------------------------


def _bad(field: str, message: str) -> _HelloError:
    return _HelloError("bad_hello", message, field=field)


def _optional_str(
    frame: Frame, name: str, pattern: re.Pattern[str] | None
) -> str | None:
    """An optional string member; null counts as absent."""
    value = frame.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _bad(name, f"{name} must be a string")
    if pattern is not None:
        if not pattern.fullmatch(value):
            raise _bad(name, f"{name} is malformed")
    elif not 0 < len(value) <= _MAX_TEXT or not value.isprintable():
        raise _bad(name, f"{name} must be 1..{_MAX_TEXT} printable characters")
    return value


def _parse_hello(frame: Frame) -> tuple[Hello, str]:
    """Validate a hello's members; return it and its token (kept apart)."""
    v = frame.get("v")
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad("v", "v must be an integer")
    if v != PROTOCOL_VERSION:
        raise _HelloError(
            "unsupported_version",
            f"protocol version {v} is not supported",
            supported=[PROTOCOL_VERSION],
        )
    device_id = frame.get("device_id")
    if not isinstance(device_id, str) or not DEVICE_ID_RE.fullmatch(device_id):
        raise _bad("device_id", "device_id must be 1..128 of [A-Za-z0-9._:-]")
    token = frame.get("token")
    if not isinstance(token, str) or not token:
        raise _bad("token", "token must be a non-empty string")
    voip_token = _optional_str(frame, "voip_token", _HEX_RE)
    alert_token = _optional_str(frame, "alert_token", _HEX_RE)
    topic = _optional_str(frame, "topic", _TOPIC_RE)
    apns_env = frame.get("apns_env")
    if apns_env is not None and (
        not isinstance(apns_env, str) or apns_env not in APNS_ENVS
    ):
        raise _bad("apns_env", "apns_env must be production or sandbox")
    hello = Hello(
        device_id=device_id,
        voip_token=voip_token.lower() if voip_token else None,
        alert_token=alert_token.lower() if alert_token else None,
        topic=topic,
        apns_env=apns_env,
        locale=_optional_str(frame, "locale", None),
        app_version=_optional_str(frame, "app_version", None),
    )
    return hello, token
