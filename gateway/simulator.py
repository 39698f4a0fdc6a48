"""``voipgw-device``: simulated LPP/1 devices for tests, demos and benchmarks.

A device behaves as ``localpush.md`` asks of a real app: ``hello`` first, a
``ping`` every ``heartbeat_s`` from ``welcome``, an ``ack`` for every ``call``,
``call_cancel`` and ``message``, ``pong`` for a server ``ping``, reconnect after
``goaway`` honouring ``reconnect_after_ms`` (and with backoff after a lost
connection), ``bye`` on stop. Knobs make it a bad device on purpose: late acks,
dropped acks, slow or no ``call_event`` replies.

Layers: ``ClientSession`` is sans-IO (bytes and ``now`` in, bytes and events
out, no Twisted), ``SimProtocol`` moves bytes and one timer, ``SimDevice`` owns
reconnects for one device, ``Simulator`` runs many. Frames go through the
gateway's own codec (``encode_frame``, ``FrameDecoder``).

    voipgw-device --port 5223 --ca-file cert.pem --secret-file jwt.secret \
        -n 100 --aor-pattern 'sip:user{n}@example.com' --on-call ringing \
        --ack-delay-ms 20 --drop-acks 0.1 --duration 300

prints one JSON line per event (``--frames-only``, ``--quiet``) and a summary.
In tests, pass a ``Recorder`` as the observer: it keeps ``Record(device_id,
event, at)`` values and calls callbacks; ``wait_for`` returns a Deferred.
"""

from __future__ import annotations

import argparse
import enum
import gc
import itertools
import json
import random
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Protocol, cast

import attrs
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import (
    IDelayedCall,
    IOpenSSLClientConnectionCreator,
    IReactorCore,
    IReactorTCP,
    IReactorTime,
)
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface

from gateway.devicetoken import DEVICE_ID_RE, mint_device_token
from gateway.localpush.codec import (
    Frame,
    FrameDecoder,
    RemoteProtocolError,
    encode_frame,
    encode_ping,
    simple_frame,
)
from gateway.localpush.timers import SessionTimers

__all__ = [
    "ON_CALL_CHOICES",
    "AckDropped",
    "Backoff",
    "Behaviour",
    "CallEventSent",
    "ClientSession",
    "Connected",
    "Credentials",
    "Disconnected",
    "FrameReceived",
    "GoawayReceived",
    "HelloExtras",
    "JsonLinesObserver",
    "ProtocolFault",
    "ReconnectScheduled",
    "Record",
    "Recorder",
    "ServerError",
    "SimDevice",
    "SimEvent",
    "SimObserver",
    "SimProtocol",
    "SimReactor",
    "Simulator",
    "Target",
    "Welcomed",
    "credentials_from_secret",
    "main",
    "read_tokens_file",
]

ON_CALL_CHOICES = ("none", "ringing", "declined", "answered")
# Server frames that must be acked (localpush.md, "Frames the server sends").
_ACKED_TYPES = frozenset({"call", "call_cancel", "message"})
# Errors after which the server keeps the session open.
_NON_FATAL_ERRORS = frozenset({"unknown_type", "unexpected_frame"})
# Errors a retry cannot fix: a real app would stop and ask its backend.
_GIVE_UP_ERRORS = frozenset({"unauthorized", "bad_hello", "unsupported_version"})
# Our own decoder limit: the server never sends more than its max_frame.
_CLIENT_MAX_FRAME = 1 << 20
MAX_SESSIONS = 200_000
_GC_FREEZE_FROM = 1000  # the CLI keeps session objects out of full GC from here


def _fraction(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be within 0..1")


def _not_negative(
    _inst: object, attribute: attrs.Attribute[float], value: float
) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must not be negative")


# Values -------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Credentials:
    """One device's identity; the token is kept out of ``repr`` (never logged)."""

    device_id: str
    token: str = attrs.field(repr=False)
    aor: str


@attrs.frozen(kw_only=True)
class HelloExtras:
    """Optional ``hello`` members, the same for every simulated device."""

    voip_token: str | None = None
    alert_token: str | None = None
    topic: str | None = None
    apns_env: str | None = None
    locale: str | None = None
    app_version: str | None = None

    def members(self) -> dict[str, str]:
        """The members that are set."""
        return {k: v for k, v in attrs.asdict(self).items() if v is not None}


@attrs.frozen(kw_only=True)
class Behaviour:
    """How a device answers: ack delay and drop share, call_event reply, pings."""

    ack_delay_s: float = attrs.field(default=0.0, validator=_not_negative)
    drop_acks: float = attrs.field(default=0.0, validator=_fraction)
    on_call: str = attrs.field(
        default="none", validator=attrs.validators.in_(ON_CALL_CHOICES)
    )
    call_event_delay_s: float = attrs.field(default=0.0, validator=_not_negative)
    ping: bool = True


@attrs.frozen(kw_only=True)
class Backoff:
    """Reconnect delay after a lost connection: base * 2**n, capped, jittered."""

    base_s: float = attrs.field(default=1.0, validator=_not_negative)
    cap_s: float = attrs.field(default=60.0, validator=_not_negative)
    jitter: float = attrs.field(default=0.5, validator=_fraction)

    def delay(self, failures: int, rng: random.Random) -> float:
        """Delay before attempt ``failures + 1`` (jitter takes up to ``jitter``)."""
        raw = min(self.cap_s, self.base_s * 2.0 ** min(failures, 30))
        return raw * (1.0 - self.jitter * rng.random())


# Events -------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class FrameReceived:
    """The server sent ``frame`` (every frame, before it is acted upon)."""

    frame: Frame


@attrs.frozen(kw_only=True)
class Welcomed:
    """``welcome`` arrived: the session is open."""

    session_id: str
    heartbeat_s: float


@attrs.frozen(kw_only=True)
class AckDropped:
    """The behaviour chose not to ack ``frame_id`` (a simulated bad device)."""

    frame_id: str


@attrs.frozen(kw_only=True)
class CallEventSent:
    """A ``call_event`` went out."""

    call_id: str
    event: str


@attrs.frozen(kw_only=True)
class GoawayReceived:
    """``goaway``: the server closes; reconnect after ``reconnect_after_ms``."""

    reason: str
    reconnect_after_ms: int


@attrs.frozen(kw_only=True)
class ServerError:
    """An ``error`` frame; ``fatal`` when the server closes after it."""

    code: str
    message: str
    fatal: bool


@attrs.frozen(kw_only=True)
class ProtocolFault:
    """The server broke LPP/1 (bad framing); we close."""

    code: str
    message: str


@attrs.frozen(kw_only=True)
class Connected:
    """TCP is up (TLS may still be handshaking); ``attempt`` counts from 1."""

    attempt: int


@attrs.frozen(kw_only=True)
class Disconnected:
    """The connection is gone (or never came up, ``connected`` False)."""

    reason: str
    connected: bool


@attrs.frozen(kw_only=True)
class ReconnectScheduled:
    """The next attempt runs in ``delay_s``; ``after_goaway`` tells why."""

    delay_s: float
    after_goaway: bool


SessionEvent = (
    FrameReceived
    | Welcomed
    | AckDropped
    | CallEventSent
    | GoawayReceived
    | ServerError
    | ProtocolFault
)
SimEvent = SessionEvent | Connected | Disconnected | ReconnectScheduled


# Sans-IO client session -----------------------------------------------------------


class _State(enum.Enum):
    NEW = "new"
    HELLO_SENT = "hello_sent"
    OPEN = "open"
    CLOSED = "closed"


class ClientSession:
    """One connection's client side of LPP/1; no sockets, no timers, no clock.

    ``start`` queues the hello; ``receive_data`` and ``tick`` take ``now``;
    ``next_deadline`` says when ``tick`` has work (pings, delayed acks and
    call_events); ``data_to_send`` drains the bytes to write.
    """

    def __init__(
        self,
        credentials: Credentials,
        *,
        hello: HelloExtras | None = None,
        behaviour: Behaviour | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._credentials = credentials
        self._hello = hello or HelloExtras()
        self._behaviour = behaviour or Behaviour()
        self._rng = rng or random.Random()
        self._decoder = FrameDecoder(_CLIENT_MAX_FRAME)
        self._state = _State.NEW
        self._out: list[bytes] = []
        self._events: list[SessionEvent] = []
        # (due, seq, frame) kept sorted by due; seq keeps FIFO order on ties.
        self._delayed: list[tuple[float, int, dict[str, Any]]] = []
        self._seq = itertools.count()
        self._ping_ids = itertools.count(1)
        self._heartbeat_s: float | None = None
        self._next_ping: float | None = None
        self.session_id: str | None = None
        self.reconnect_after_s: float | None = None
        self.give_up = False

    # Inspection ---------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """True between ``welcome`` and the end of the session."""
        return self._state is _State.OPEN

    @property
    def should_close(self) -> bool:
        """True once the session is over: flush ``data_to_send``, then close."""
        return self._state is _State.CLOSED

    def next_deadline(self) -> float | None:
        """When ``tick`` next has work, or None."""
        if self._state is not _State.OPEN:
            return None
        times = [due for due, _, _ in self._delayed[:1]]
        if self._next_ping is not None:
            times.append(self._next_ping)
        return min(times) if times else None

    def data_to_send(self) -> bytes:
        """Drain the queued bytes; does no I/O."""
        data = b"".join(self._out)
        self._out.clear()
        return data

    # Inputs -------------------------------------------------------------------

    def start(self) -> None:
        """Queue the ``hello`` (call once, when the connection is up)."""
        if self._state is not _State.NEW:
            return
        hello: dict[str, Any] = {
            "type": "hello",
            "v": 1,
            "device_id": self._credentials.device_id,
            "token": self._credentials.token,
            **self._hello.members(),
        }
        self._queue(hello)
        self._state = _State.HELLO_SENT

    def receive_data(self, data: bytes, now: float) -> list[SessionEvent]:
        """Feed bytes from the server; return what happened."""
        if self._state is _State.CLOSED:
            return []
        if not self._decoder.buffered:
            simple = simple_frame(data, _CLIENT_MAX_FRAME)
            if simple is not None and simple[0] == b"pong":
                # The answer to our ping, without the JSON decode: the same
                # Frame the decoder would have made (pongs need nothing else).
                body = {"type": "pong", "id": simple[1].decode("ascii")}
                return [FrameReceived(frame=Frame(type="pong", body=body))]
        fault: RemoteProtocolError | None = None
        try:
            frames = self._decoder.feed(data)
        except RemoteProtocolError as e:
            frames, fault = list(e.frames), e
        for frame in frames:
            if self.should_close:  # a goaway or fatal error came first
                break
            self._on_frame(frame, now)
        if fault is not None and not self.should_close:
            self._events.append(ProtocolFault(code=fault.code, message=fault.message))
            self._state = _State.CLOSED
        return self._take_events()

    def tick(self, now: float) -> list[SessionEvent]:
        """Send what is due at ``now``: delayed acks and call_events, the ping."""
        if self._state is not _State.OPEN:
            return []
        while self._delayed and self._delayed[0][0] <= now:
            _, _, frame = self._delayed.pop(0)
            self._send_now(frame)
        period, next_ping = self._heartbeat_s, self._next_ping
        if period is not None and next_ping is not None and next_ping <= now:
            # what encode_frame writes for {"type": "ping", "id": "p-<n>"}
            self._out.append(encode_ping(b"p-%d" % next(self._ping_ids)))
            # Next ping one period later; skip periods missed while stalled.
            while next_ping <= now:
                next_ping += period
            self._next_ping = next_ping
        return self._take_events()

    def close(self) -> None:
        """Queue ``bye`` if the session is open; either way the session is over."""
        if self._state is _State.OPEN:
            self._queue({"type": "bye"})
        self._state = _State.CLOSED
        self._delayed.clear()

    def connection_lost(self) -> None:
        """The transport is gone; nothing more will be sent."""
        self._state = _State.CLOSED
        self._delayed.clear()

    # Frame handling -------------------------------------------------------------

    def _on_frame(self, frame: Frame, now: float) -> None:
        self._events.append(FrameReceived(frame=frame))
        kind = frame.type
        if kind == "welcome" and self._state is _State.HELLO_SENT:
            self._on_welcome(frame, now)
        elif kind in _ACKED_TYPES and self._state is _State.OPEN:
            self._on_acked_frame(frame, now)
        elif kind == "ping":
            pong: dict[str, Any] = {"type": "pong"}
            if isinstance(frame.get("id"), str):
                pong["id"] = frame.get("id")
            self._queue(pong)
        elif kind == "goaway":
            ms = frame.get("reconnect_after_ms")
            ms = ms if isinstance(ms, int) and not isinstance(ms, bool) else 0
            ms = max(0, ms)
            reason = frame.get("reason")
            self._events.append(
                GoawayReceived(
                    reason=reason if isinstance(reason, str) else "",
                    reconnect_after_ms=ms,
                )
            )
            self.reconnect_after_s = ms / 1000.0
            self._state = _State.CLOSED
            self._delayed.clear()
        elif kind == "error":
            self._on_error(frame)
        # pong and anything else: recorded above, nothing to do.

    def _on_welcome(self, frame: Frame, now: float) -> None:
        heartbeat = frame.get("heartbeat_s")
        valid = isinstance(heartbeat, int | float) and not isinstance(heartbeat, bool)
        heartbeat_s = float(heartbeat) if valid and heartbeat > 0 else 30.0
        session_id = frame.get("session_id")
        self.session_id = session_id if isinstance(session_id, str) else ""
        self._state = _State.OPEN
        self._heartbeat_s = heartbeat_s
        if self._behaviour.ping:
            self._next_ping = now + heartbeat_s
        self._events.append(
            Welcomed(session_id=self.session_id, heartbeat_s=heartbeat_s)
        )

    def _on_acked_frame(self, frame: Frame, now: float) -> None:
        frame_id = frame.get("id")
        if isinstance(frame_id, str):
            if self._rng.random() < self._behaviour.drop_acks:
                self._events.append(AckDropped(frame_id=frame_id))
            else:
                self._send_at(
                    {"type": "ack", "id": frame_id},
                    now + self._behaviour.ack_delay_s,
                    now,
                )
        call_id = frame.get("call_id")
        if (
            frame.type == "call"
            and self._behaviour.on_call != "none"
            and isinstance(call_id, str)
        ):
            self._send_at(
                {
                    "type": "call_event",
                    "call_id": call_id,
                    "event": self._behaviour.on_call,
                },
                now + self._behaviour.call_event_delay_s,
                now,
            )

    def _on_error(self, frame: Frame) -> None:
        code = frame.get("code")
        code = code if isinstance(code, str) else ""
        message = frame.get("message")
        fatal = code not in _NON_FATAL_ERRORS
        self._events.append(
            ServerError(
                code=code,
                message=message if isinstance(message, str) else "",
                fatal=fatal,
            )
        )
        if fatal:
            self.give_up = code in _GIVE_UP_ERRORS
            self._state = _State.CLOSED
            self._delayed.clear()

    # Helpers --------------------------------------------------------------------

    def _send_at(self, frame: dict[str, Any], due: float, now: float) -> None:
        """Send now if due and nothing is waiting ahead of it, else keep order."""
        if due <= now and not self._delayed:
            self._send_now(frame)
            return
        entry = (due, next(self._seq), frame)
        index = len(self._delayed)
        while index > 0 and self._delayed[index - 1][:2] > entry[:2]:
            index -= 1
        self._delayed.insert(index, entry)

    def _send_now(self, frame: dict[str, Any]) -> None:
        self._queue(frame)
        if frame["type"] == "call_event":
            self._events.append(
                CallEventSent(call_id=frame["call_id"], event=frame["event"])
            )

    def _queue(self, frame: dict[str, Any]) -> None:
        self._out.append(encode_frame(frame, _CLIENT_MAX_FRAME))

    def _take_events(self) -> list[SessionEvent]:
        events, self._events = self._events, []
        return events


# Observers ----------------------------------------------------------------------


class SimObserver(Protocol):
    """Told about every event of every simulated device."""

    def on_event(self, device_id: str, event: SimEvent, at: float) -> None:
        """``event`` happened to ``device_id`` at clock time ``at``."""


@attrs.frozen(kw_only=True)
class Record:
    """One recorded event with its device and clock time."""

    device_id: str
    event: SimEvent
    at: float


class Recorder:
    """Keeps events (up to ``limit``) and calls callbacks; the in-process API."""

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self.records: list[Record] = []
        self.dropped = 0
        self.callbacks: list[Callable[[Record], None]] = []

    def on_event(self, device_id: str, event: SimEvent, at: float) -> None:
        """Record and pass on to the callbacks."""
        record = Record(device_id=device_id, event=event, at=at)
        if len(self.records) < self.limit:
            self.records.append(record)
        else:
            self.dropped += 1
        for callback in list(self.callbacks):
            callback(record)

    def frames(self, frame_type: str | None = None) -> list[tuple[str, Frame, float]]:
        """Received frames (of ``frame_type``) as (device_id, frame, at)."""
        return [
            (r.device_id, r.event.frame, r.at)
            for r in self.records
            if isinstance(r.event, FrameReceived)
            and (frame_type is None or r.event.frame.type == frame_type)
        ]

    def events(self, kind: type[Any]) -> list[Record]:
        """Records whose event is a ``kind``."""
        return [r for r in self.records if isinstance(r.event, kind)]

    def wait_for(
        self, predicate: Callable[[Record], bool], clock: IReactorTime, timeout: float
    ) -> Deferred[Record]:
        """Fires with the first record (past or future) matching ``predicate``."""
        for record in self.records:
            if predicate(record):
                return succeed(record)

        def check(record: Record) -> None:
            if predicate(record) and not d.called:
                self.callbacks.remove(check)
                d.callback(record)

        def cancel(_: Deferred[Record]) -> None:
            if check in self.callbacks:
                self.callbacks.remove(check)

        d: Deferred[Record] = Deferred(cancel)
        self.callbacks.append(check)
        return d.addTimeout(timeout, clock)


class JsonLinesObserver:
    """Prints one JSON object per event (the CLI's output); no tokens in it."""

    def __init__(self, out: IO[str], *, frames_only: bool = False) -> None:
        self._out = out
        self._frames_only = frames_only

    def on_event(self, device_id: str, event: SimEvent, at: float) -> None:
        """Write the event as a JSON line."""
        if self._frames_only and not isinstance(event, FrameReceived):
            return
        line = {"t": round(at, 6), "device_id": device_id, **event_to_json(event)}
        self._out.write(json.dumps(line, separators=(",", ":")) + "\n")
        self._out.flush()


def event_to_json(event: SimEvent) -> dict[str, Any]:
    """A plain-data view of an event (``event`` names its kind)."""
    if isinstance(event, FrameReceived):
        return {"event": "frame", "frame": dict(event.frame.body)}
    names = {
        Welcomed: "welcome",
        AckDropped: "ack_dropped",
        CallEventSent: "call_event_sent",
        GoawayReceived: "goaway",
        ServerError: "error",
        ProtocolFault: "protocol_fault",
        Connected: "connected",
        Disconnected: "disconnected",
        ReconnectScheduled: "reconnect_scheduled",
    }
    return {"event": names[type(event)], **attrs.asdict(event)}


# Twisted side ---------------------------------------------------------------------


class _Transport(Protocol):
    """What we use of a TCP/TLS transport."""

    def write(self, data: bytes) -> None: ...
    def loseConnection(self) -> None: ...
    def abortConnection(self) -> None: ...


class SimProtocol(TwistedProtocol):
    """Thin adapter: bytes and one timer between a transport and a ClientSession."""

    def __init__(self, device: SimDevice, session: ClientSession) -> None:
        self._device = device
        self.session = session
        self._clock = device.clock
        self._timers = device.timers
        # The session's next deadline on the shared timers (token 0: none).
        self._timer = 0
        self._timer_at = 0.0
        self._abort_timer: IDelayedCall | None = None
        self._closing = False
        self.lost = False

    @property
    def _transport(self) -> _Transport:
        assert self.transport is not None
        return cast(_Transport, self.transport)

    def connectionMade(self) -> None:
        """Say hello (TLS buffers it until its handshake is done)."""
        self._device.connected(self)
        self.session.start()
        self._after([])

    def dataReceived(self, data: bytes) -> None:
        """Feed the session, report its events, write and reschedule."""
        self._after(self.session.receive_data(data, self._clock.seconds()))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Cancel timers and let the device decide about reconnecting."""
        self.lost = True
        self._timers.cancel(self._timer)
        self._timer = 0
        if self._abort_timer is not None and self._abort_timer.active():
            self._abort_timer.cancel()
        self._abort_timer = None
        self.session.connection_lost()
        self._device.disconnected(self, reason.getErrorMessage())

    def say_bye(self) -> None:
        """Send ``bye`` (if open) and close."""
        if self.lost:
            return
        self.session.close()
        self._after([])

    def _after(self, events: list[SessionEvent]) -> None:
        for event in events:
            self._device.report(event)
        if self.lost:
            return
        data = self.session.data_to_send()
        if data:
            self._transport.write(data)
        if self.session.should_close:
            self._close()
        else:
            self._schedule()

    def _schedule(self) -> None:
        deadline = self.session.next_deadline()
        if self._timer:
            # An earlier timer stays: it finds nothing due, ticks and re-arms.
            if deadline is not None and self._timer_at <= deadline:
                return
            self._timers.cancel(self._timer)
            self._timer = 0
        if deadline is not None:
            self._timer = self._timers.set(self, deadline)
            self._timer_at = deadline

    def on_deadline(self) -> None:
        """The session's next deadline passed (``SessionTimers``): tick."""
        self._timer = 0
        if not self.lost:
            self._after(self.session.tick(self._clock.seconds()))

    def _close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._timers.cancel(self._timer)
        self._timer = 0
        self._transport.loseConnection()
        self._abort_timer = self._clock.callLater(
            self._device.close_timeout_s, self._abort
        )

    def _abort(self) -> None:
        self._abort_timer = None
        if not self.lost:
            self._transport.abortConnection()


Connector = Callable[[SimProtocol], "Deferred[Any]"]


class SimDevice:
    """One simulated device: connects, reconnects as a real app would, stops.

    ``connector`` connects a protocol (fires when TCP is up, errbacks when the
    attempt fails); tests pass one that uses in-memory transports.
    """

    log = Logger()

    def __init__(
        self,
        credentials: Credentials,
        *,
        clock: IReactorTime,
        connector: Connector,
        observer: SimObserver,
        hello: HelloExtras | None = None,
        behaviour: Behaviour | None = None,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
        close_timeout_s: float = 5.0,
        timers: SessionTimers | None = None,
    ) -> None:
        self.credentials = credentials
        self.clock = clock
        # Shared by every device of a Simulator: one reactor timer for all.
        self.timers = timers if timers is not None else SessionTimers(clock)
        self.close_timeout_s = close_timeout_s
        self._connector = connector
        self._observer = observer
        self._hello = hello or HelloExtras()
        self._behaviour = behaviour or Behaviour()
        self._backoff = backoff or Backoff()
        self._rng = rng or random.Random()
        self._proto: SimProtocol | None = None
        self._attempt: Deferred[Any] | None = None
        self._retry: IDelayedCall | None = None
        self._failures = 0
        self._stopping = False
        self._stopped: list[Deferred[None]] = []
        self.attempts = 0
        self.sessions = 0

    @property
    def device_id(self) -> str:
        """The simulated device's id."""
        return self.credentials.device_id

    @property
    def is_open(self) -> bool:
        """True while a session is open (welcomed and not ended)."""
        return self._proto is not None and self._proto.session.is_open

    @property
    def session(self) -> ClientSession | None:
        """The current connection's session, if connected."""
        return self._proto.session if self._proto is not None else None

    def start(self) -> None:
        """Make the first connection attempt."""
        if self._stopping or self._proto is not None or self._retry is not None:
            return
        self._connect()

    def stop(self) -> Deferred[None]:
        """Say ``bye``, close, cancel reconnects; fires once the connection is gone."""
        self._stopping = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._proto is None:
            if self._attempt is not None:
                self._attempt.cancel()  # errbacks: _connect_failed
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._stopped.append(d)
        self._proto.say_bye()
        return d

    # Called by SimProtocol ------------------------------------------------------

    def connected(self, proto: SimProtocol) -> None:
        """TCP is up for ``proto``."""
        self._proto = proto
        self._attempt = None
        self.report(Connected(attempt=self.attempts))
        if self._stopping:
            proto.say_bye()

    def report(self, event: SimEvent) -> None:
        """Pass an event to the observer (and reset backoff on welcome)."""
        if isinstance(event, Welcomed):
            self._failures = 0
            self.sessions += 1
        self._observer.on_event(self.device_id, event, self.clock.seconds())

    def disconnected(self, proto: SimProtocol, reason: str) -> None:
        """The connection is gone: stop, give up, or schedule the next attempt."""
        if proto is not self._proto:
            return
        self._proto = None
        self.report(Disconnected(reason=reason, connected=True))
        session = proto.session
        if self._stopping:
            waiters, self._stopped = self._stopped, []
            for d in waiters:
                d.callback(None)
            return
        if session.give_up:
            self.log.warn(
                "Device {device_id} gives up: the server refused its hello",
                device_id=self.device_id,
            )
            return
        if session.reconnect_after_s is not None:
            self._schedule(session.reconnect_after_s, after_goaway=True)
        else:
            self._schedule_backoff()

    # Internals ------------------------------------------------------------------

    def _connect(self) -> None:
        self._retry = None
        self.attempts += 1
        session = ClientSession(
            self.credentials,
            hello=self._hello,
            behaviour=self._behaviour,
            rng=self._rng,
        )
        proto = SimProtocol(self, session)
        d = self._attempt = self._connector(proto)
        d.addErrback(self._connect_failed)

    def _connect_failed(self, failure: Failure) -> None:
        self._attempt = None
        self.report(Disconnected(reason=failure.getErrorMessage(), connected=False))
        if not self._stopping:
            self._schedule_backoff()

    def _schedule_backoff(self) -> None:
        delay = self._backoff.delay(self._failures, self._rng)
        self._failures += 1
        self._schedule(delay, after_goaway=False)

    def _schedule(self, delay: float, *, after_goaway: bool) -> None:
        self.report(ReconnectScheduled(delay_s=delay, after_goaway=after_goaway))
        self._retry = self.clock.callLater(delay, self._connect)


# Many devices ---------------------------------------------------------------------


class SimReactor(IReactorTCP, IReactorTime, IReactorCore, Interface):
    """What the simulator needs from a reactor: TCP clients and a clock."""


@attrs.frozen(kw_only=True)
class Target:
    """Where the gateway listens; ``tls`` None means plain TCP."""

    host: str
    port: int
    tls: IOpenSSLClientConnectionCreator | None = None
    bind_hosts: tuple[str, ...] = ()
    connect_timeout_s: float = 10.0

    def connector(self, reactor: SimReactor, index: int) -> Connector:
        """A connector for device ``index``, bound to one of ``bind_hosts``."""
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

        bind = None
        if self.bind_hosts:
            bind = (self.bind_hosts[index % len(self.bind_hosts)], 0)

        def connect(proto: SimProtocol) -> Deferred[Any]:
            endpoint: Any = TCP4ClientEndpoint(
                reactor,
                self.host,
                self.port,
                timeout=self.connect_timeout_s,
                bindAddress=bind,
            )
            if self.tls is not None:
                from gateway.tls import TLSClientEndpoint  # pyOpenSSL: TLS only

                endpoint = TLSClientEndpoint(self.tls, endpoint, reactor)
            d: Deferred[Any] = connectProtocol(endpoint, proto)  # type: ignore[no-untyped-call]
            return d

        return connect


class Simulator:
    """Runs up to ``MAX_SESSIONS`` devices; starts them at ``connect_rate`` per s.

    ``max_pending`` caps devices started but not yet welcomed (or failed), so a
    ramp faster than the server's handshakes does not pile up timeouts.
    """

    _STEP_S = 0.01

    def __init__(
        self,
        reactor: SimReactor,
        target: Target,
        credentials: Sequence[Credentials],
        *,
        observer: SimObserver,
        hello: HelloExtras | None = None,
        behaviour: Behaviour | None = None,
        backoff: Backoff | None = None,
        connect_rate: float = 500.0,
        max_pending: int | None = None,
        seed: int | None = None,
    ) -> None:
        if len(credentials) > MAX_SESSIONS:
            raise ValueError(f"at most {MAX_SESSIONS} sessions")
        if connect_rate <= 0:
            raise ValueError("connect_rate must be positive")
        if max_pending is not None and max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self._reactor = reactor
        self._connect_rate = connect_rate
        self._max_pending = max_pending
        self._observer = observer
        self._queue: Iterator[SimDevice] | None = None
        self._starting: set[str] = set()
        self._credit = 0.0
        self._ramp: IDelayedCall | None = None
        self._stopping = False
        rng = random.Random(seed)
        timers = SessionTimers(reactor)
        self.devices = [
            SimDevice(
                creds,
                clock=reactor,
                timers=timers,
                connector=target.connector(reactor, i),
                observer=self,
                hello=hello,
                behaviour=behaviour,
                backoff=backoff,
                rng=random.Random(rng.random()),
            )
            for i, creds in enumerate(credentials)
        ]

    @property
    def open_count(self) -> int:
        """Devices with an open session now."""
        return sum(1 for d in self.devices if d.is_open)

    @property
    def ramp_done(self) -> bool:
        """True once every device was started."""
        return self._queue is not None and self._ramp is None

    def start(self) -> None:
        """Start the devices, ``connect_rate`` per second, in 10 ms steps."""
        self._queue = iter(self.devices)
        self._credit = 1.0  # the first device goes at once
        self._ramp_step()

    def stop(self) -> Deferred[None]:
        """Stop starting devices; every device says ``bye``; fires when all closed."""
        self._stopping = True
        if self._ramp is not None and self._ramp.active():
            self._ramp.cancel()
        self._ramp = None
        stops = [device.stop() for device in self.devices]
        done: Deferred[None] = gatherResults(stops).addCallback(lambda _: None)
        return done

    def on_event(self, device_id: str, event: SimEvent, at: float) -> None:
        """SimObserver for our devices: track the ramp, pass everything on."""
        if isinstance(event, Welcomed | Disconnected):
            self._starting.discard(device_id)
        self._observer.on_event(device_id, event, at)

    def _ramp_step(self) -> None:
        self._ramp = None
        if self._stopping or self._queue is None:
            return
        budget = int(self._credit)
        if self._max_pending is not None:
            budget = min(budget, self._max_pending - len(self._starting))
        for _ in range(max(0, budget)):
            device = next(self._queue, None)
            if device is None:
                return  # all started
            self._credit -= 1.0
            self._starting.add(device.device_id)
            device.start()
        # Unused credit is capped at one step so a stall does not cause a burst.
        step_credit = self._connect_rate * self._STEP_S
        self._credit = min(self._credit + step_credit, max(1.0, step_credit))
        self._ramp = self._reactor.callLater(self._STEP_S, self._ramp_step)


# Credentials ----------------------------------------------------------------------


def credentials_from_secret(
    secret: bytes,
    count: int,
    *,
    prefix: str = "sim",
    aor_pattern: str = "sip:user{n}@example.com",
    first: int = 1,
    now: float,
    ttl_s: int = 86400,
) -> list[Credentials]:
    """Mint tokens for devices ``<prefix>-<n>`` as the integrator's backend would."""
    if not 0 <= count <= MAX_SESSIONS:
        raise ValueError(f"count must be within 0..{MAX_SESSIONS}")
    out = []
    for n in range(first, first + count):
        device_id = f"{prefix}-{n}"
        aor = aor_pattern.format(n=n)
        token = mint_device_token(secret, device_id, aor, now=now, ttl_s=ttl_s)
        out.append(Credentials(device_id=device_id, token=token, aor=aor))
    return out


def read_tokens_file(path: Path, limit: int = MAX_SESSIONS) -> list[Credentials]:
    """Lines ``device_id token aor``; blank lines and ``#`` comments are skipped."""
    out: list[Credentials] = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.split()
        if len(parts) != 3 or not DEVICE_ID_RE.fullmatch(parts[0]):
            raise ValueError(f"{path}:{number}: expected 'device_id token aor'")
        out.append(Credentials(device_id=parts[0], token=parts[1], aor=parts[2]))
        if len(out) > limit:
            raise ValueError(f"{path}: more than {limit} devices")
    return out


# CLI --------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="voipgw-device",
        description="Simulated LPP/1 devices: connect, ack, answer calls, "
        "print what arrives as JSON lines.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    tls = p.add_mutually_exclusive_group(required=True)
    tls.add_argument("--ca-file", type=Path, help="PEM certificate(s) to trust")
    tls.add_argument(
        "--insecure", action="store_true", help="TLS without verifying the server"
    )
    tls.add_argument("--plain", action="store_true", help="plain TCP, no TLS")
    p.add_argument(
        "--server-name", default="localhost", help="TLS name to verify (SNI)"
    )
    creds = p.add_mutually_exclusive_group(required=True)
    creds.add_argument("--secret-file", type=Path, help="device JWT secret file")
    creds.add_argument(
        "--tokens-file", type=Path, help="lines of 'device_id token aor'"
    )
    p.add_argument("-n", "--sessions", type=int, default=1)
    p.add_argument("--first", type=int, default=1, help="number of the first device")
    p.add_argument("--device-prefix", default="sim")
    p.add_argument("--aor-pattern", default="sip:user{n}@example.com")
    p.add_argument("--token-ttl", type=int, default=86400)
    p.add_argument("--voip-token")
    p.add_argument("--alert-token")
    p.add_argument("--topic")
    p.add_argument("--apns-env", choices=("production", "sandbox"))
    p.add_argument("--ack-delay-ms", type=float, default=0.0)
    p.add_argument("--drop-acks", type=float, default=0.0, help="share 0..1")
    p.add_argument("--on-call", choices=ON_CALL_CHOICES, default="none")
    p.add_argument("--call-event-delay-ms", type=float, default=0.0)
    p.add_argument("--no-ping", action="store_true", help="never send pings")
    p.add_argument(
        "--duration", type=float, default=60.0, help="seconds, then bye (max 1 day)"
    )
    p.add_argument("--connect-rate", type=float, default=500.0, help="per second")
    p.add_argument(
        "--max-pending",
        type=int,
        default=None,
        help="cap on devices connecting but not yet welcomed",
    )
    p.add_argument(
        "--bind",
        action="append",
        default=None,
        help="local source address (repeatable; spreads sessions)",
    )
    p.add_argument("--frames-only", action="store_true", help="print frames only")
    p.add_argument("--quiet", action="store_true", help="print only a summary")
    p.add_argument("--seed", type=int, default=None)
    return p


def _client_tls(args: argparse.Namespace) -> IOpenSSLClientConnectionCreator | None:
    from twisted.internet.ssl import (
        Certificate,
        CertificateOptions,
        optionsForClientTLS,
        trustRootFromCertificates,
    )

    if args.plain:
        return None
    if args.insecure:
        return cast(IOpenSSLClientConnectionCreator, CertificateOptions(verify=False))
    pem = cast(Path, args.ca_file).read_bytes()
    certs = [
        Certificate.loadPEM(b"-----BEGIN CERTIFICATE-----" + block)
        for block in pem.split(b"-----BEGIN CERTIFICATE-----")[1:]
    ]
    return optionsForClientTLS(
        args.server_name,
        trustRoot=trustRootFromCertificates(certs),  # type: ignore[no-untyped-call]
    )


def build_from_args(
    args: argparse.Namespace, reactor: SimReactor, observer: SimObserver
) -> Simulator:
    """The Simulator the command line asks for (raises ValueError on bad input)."""
    from gateway.devfiles import read_jwt_secret

    if not 1 <= args.sessions <= MAX_SESSIONS:
        raise ValueError(f"--sessions must be within 1..{MAX_SESSIONS}")
    if args.tokens_file is not None:
        credentials = read_tokens_file(args.tokens_file)[: args.sessions]
    else:
        credentials = credentials_from_secret(
            read_jwt_secret(args.secret_file),
            args.sessions,
            prefix=args.device_prefix,
            aor_pattern=args.aor_pattern,
            first=args.first,
            now=reactor.seconds(),
            ttl_s=args.token_ttl,
        )
    target = Target(
        host=args.host,
        port=args.port,
        tls=_client_tls(args),
        bind_hosts=tuple(args.bind or ()),
    )
    return Simulator(
        reactor,
        target,
        credentials,
        observer=observer,
        hello=HelloExtras(
            voip_token=args.voip_token,
            alert_token=args.alert_token,
            topic=args.topic,
            apns_env=args.apns_env,
        ),
        behaviour=Behaviour(
            ack_delay_s=args.ack_delay_ms / 1000.0,
            drop_acks=args.drop_acks,
            on_call=args.on_call,
            call_event_delay_s=args.call_event_delay_ms / 1000.0,
            ping=not args.no_ping,
        ),
        connect_rate=args.connect_rate,
        max_pending=args.max_pending,
        seed=args.seed,
    )


class _Counter:
    """Counts events by kind for the summary line."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def on_event(self, device_id: str, event: SimEvent, at: float) -> None:
        name = event_to_json(event)["event"]
        if isinstance(event, FrameReceived):
            name = f"frame:{event.frame.type}"
        self.counts[name] = self.counts.get(name, 0) + 1


class _Fanout:
    def __init__(self, *observers: SimObserver) -> None:
        self._observers = observers

    def on_event(self, device_id: str, event: SimEvent, at: float) -> None:
        for observer in self._observers:
            observer.on_event(device_id, event, at)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``voipgw-device``; returns the exit code."""
    args = _parser().parse_args(argv)
    if not 0 < args.duration <= 86400:
        print("--duration must be within 0..86400 s", file=sys.stderr)
        return 2
    from twisted.internet import reactor as global_reactor

    reactor = cast(SimReactor, global_reactor)
    counter = _Counter()
    observers: list[SimObserver] = [counter]
    if not args.quiet:
        observers.append(JsonLinesObserver(sys.stdout, frames_only=args.frames_only))
    try:
        sim = build_from_args(args, reactor, _Fanout(*observers))
    except (OSError, ValueError) as e:
        print(f"voipgw-device: {e}", file=sys.stderr)
        return 2
    started = reactor.seconds()

    def finish() -> None:
        d = sim.stop()
        d.addTimeout(10, reactor)
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(sim.start)
    reactor.callLater(args.duration, finish)
    if len(sim.devices) >= _GC_FREEZE_FROM:
        # Sessions live for the whole run; full GC passes over them pause the
        # process for 0.5 s and more at 10k sessions, which would show up as
        # late acks that a real device would not have.
        from twisted.internet.task import LoopingCall

        LoopingCall(gc.freeze).start(1.0, now=False)
    reactor.run()
    summary = {
        "event": "summary",
        "sessions": len(sim.devices),
        "seconds": round(reactor.seconds() - started, 3),
        "counts": counter.counts,
    }
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
