"""The call state machine (calls.md, "Delivery order for one call").

Sans-IO: one ``Call`` per incoming call, fed events (acks, APNs results,
device reports, CANCEL, the ring timer) and returning actions (send a frame,
push, tell the SIP side). It never looks at a socket, a clock or the
registry; the dispatcher does that and feeds the results back in. This keeps
every outcome on the page testable with plain objects.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

__all__ = [
    "CANCEL_REASONS",
    "Action",
    "Call",
    "CallInfo",
    "CancelDelivered",
    "Cancelled",
    "DeviceReport",
    "Event",
    "Final",
    "LocalAcked",
    "LocalFailed",
    "PushResult",
    "Resumed",
    "RingTimeout",
    "Ringing",
    "SendCall",
    "SendCancel",
    "SendVoipPush",
    "Target",
]

CANCEL_REASONS = (
    "remote_ended",
    "answered_elsewhere",
    "declined_elsewhere",
    "unanswered",
    "failed",
)
PUSH_FAILED_REASON = 'SIP;cause=480;text="Push failed"'
RATE_LIMITED_REASON = 'SIP;cause=486;text="Push rate limited"'


@attrs.frozen
class CallInfo:
    """What the devices are told about the call."""

    call_id: str
    to: str
    caller_handle: str
    caller_display_name: str | None = None
    video: bool = False
    headers: tuple[tuple[str, str], ...] = ()


@attrs.frozen
class Target:
    """A device the call should reach, as the registry and hub see it now."""

    device_id: str
    online: bool
    voip_token: str | None = None
    alert_token: str | None = None


# -- events -------------------------------------------------------------------


@attrs.frozen
class LocalAcked:
    """The device acked the ``call`` frame."""

    device_id: str


@attrs.frozen
class LocalFailed:
    """The ``call`` frame was not delivered (no session, died, ack timeout).

    ``unacked``: it went out on a session that is still up, but no ack came
    in time, so the device may show the call all the same.
    """

    device_id: str
    reason: str
    unacked: bool = False


@attrs.frozen
class PushResult:
    """The VoIP push's outcome: accepted, rejected, failed or rate_limited."""

    device_id: str
    status: str
    reason: str = ""


@attrs.frozen
class DeviceReport:
    """A ``call_event`` from the device: ringing, declined, answered, failed."""

    device_id: str
    event: str


@attrs.frozen
class Cancelled:
    """The caller's side ended the call (SIP CANCEL, control API DELETE)."""

    reason: str


@attrs.frozen
class RingTimeout:
    """Nobody answered within the ring timeout."""


@attrs.frozen
class CancelDelivered:
    """The device acked its ``call_cancel`` frame: no replay needed."""

    device_id: str


@attrs.frozen
class Resumed:
    """The device opened a local-push session (e.g. woken by the VoIP push)."""

    device_id: str


Event = (
    LocalAcked
    | LocalFailed
    | PushResult
    | DeviceReport
    | Cancelled
    | RingTimeout
    | CancelDelivered
    | Resumed
)

# -- actions ------------------------------------------------------------------


@attrs.frozen
class SendCall:
    """Send a ``call`` frame over the device's local-push session."""

    device_id: str


@attrs.frozen
class SendVoipPush:
    """Send the one VoIP push this call may have for this device."""

    device_id: str
    voip_token: str


@attrs.frozen
class SendCancel:
    """Tell the device the call is over; ``missed`` asks for a missed-call
    alert push if it has no open session."""

    device_id: str
    reason: str
    missed: bool
    alert_token: str | None


@attrs.frozen
class Ringing:
    """The first device rings: SIP 180."""


@attrs.frozen
class Final:
    """The call is over for the SIP side: this final status."""

    status: int
    reason_header: str | None = None


Action = SendCall | SendVoipPush | SendCancel | Ringing | Final

# Shared instances: these carry no per-call data, and an ended call keeps its
# Final for the resume window, so one object serves every call.
_RINGING = Ringing()
_CANCELLED = Final(487)
_UNANSWERED = Final(480)
_DECLINED = Final(603)
_RATE_LIMITED = Final(486, RATE_LIMITED_REASON)
_UNREACHABLE = Final(480, PUSH_FAILED_REASON)


@attrs.define
class _Leg:
    """One device's share of the call."""

    device_id: str
    voip_token: str | None
    alert_token: str | None
    local: str = ""  # "", "sent", "acked", "failed"
    apns: str = ""  # "", "sent", "accepted", "rejected=R", "failed=R", "rate_limited"
    ringing: bool = False
    told: bool = False  # the device knows of the call
    # A call frame went out on a session that is still up but no ack came in
    # time: the device may show the call, so it is owed the cancel.
    unacked: bool = False
    dead: bool = False  # no path left to ring it
    declined: bool = False
    told_at: float | None = None
    cancel_reason: str | None = None
    cancel_delivered: bool = False

    @property
    def contacted(self) -> bool:
        """A frame or push went out, or the device spoke of the call (a
        call_event even without the frame's ack): the device may show it."""
        return (
            self.told
            or self.unacked
            or self.local in ("sent", "acked")
            or self.apns in ("sent", "accepted")
        )

    def push_status(self) -> str:
        if self.local == "acked":
            return "local;acked"
        if self.apns == "sent":
            return "apns;pending"
        if self.apns:
            return f"apns;{self.apns}"
        if self.local == "sent":
            return "local;pending"
        if self.local == "failed":
            return "local;failed"
        return "none"


class Call:
    """One call's state; every input returns the actions it causes.

    Slotted, and its online set a tuple of strings: an ended call is kept for
    the resume window, and each object it owns is one more for the GC to walk.
    """

    __slots__ = (
        "__weakref__",
        "_missed",
        "_online",
        "answered_by",
        "decline_policy",
        "ended_at",
        "final",
        "info",
        "legs",
        "outcome",
        "outcome_reason",
        "rang",
        "resume_window",
        "started_at",
    )

    def __init__(
        self,
        info: CallInfo,
        targets: list[Target],
        *,
        now: float,
        decline_policy: str = "all",
        resume_window: float = 60.0,
    ) -> None:
        if decline_policy not in ("all", "any"):
            raise ValueError(f"decline_policy must be 'all' or 'any': {decline_policy}")
        self.info = info
        self.started_at = now
        self.decline_policy = decline_policy
        self.resume_window = resume_window
        self.legs: dict[str, _Leg] = {
            t.device_id: _Leg(t.device_id, t.voip_token, t.alert_token) for t in targets
        }
        self._online = tuple(t.device_id for t in targets if t.online)
        self.outcome: str | None = None  # set when the call ends
        self.outcome_reason: str | None = None  # the call_cancel reason
        self._missed = False
        self.final: Final | None = None
        self.rang = False
        self.answered_by: str | None = None
        self.ended_at: float | None = None

    @property
    def ended(self) -> bool:
        return self.outcome is not None

    def start(self) -> list[Action]:
        """Contact every device: local push where a session is open, else APNs."""
        actions: list[Action] = []
        for leg in self.legs.values():
            if leg.device_id in self._online:
                leg.local = "sent"
                actions.append(SendCall(leg.device_id))
            else:
                actions += self._push_or_give_up(leg)
        return actions + self._check_unreachable(self.started_at)

    def handle(self, event: Event, now: float) -> list[Action]:
        """Feed one event; unknown devices and events after the end are safe."""
        if not isinstance(event, Cancelled | RingTimeout):
            device_id = event.device_id
            if device_id not in self.legs:
                return []
        handler = _HANDLERS[type(event)]
        actions: list[Action] = handler(self, event, now)
        return actions

    def push_status(self) -> str:
        """X-Push-Status: one entry per device, in registration order."""
        return ",".join(leg.push_status() for leg in self.legs.values()) or "none"

    # -- handlers ---------------------------------------------------------------

    def _local_acked(self, event: LocalAcked, now: float) -> list[Action]:
        leg = self.legs[event.device_id]
        if leg.local != "sent":
            return []
        leg.local = "acked"
        leg.dead = False
        self._tell(leg, now)
        if self.ended:
            return self._cancel_leg(leg)
        return self._ring(leg)

    def _local_failed(self, event: LocalFailed, now: float) -> list[Action]:
        leg = self.legs[event.device_id]
        if leg.local != "sent":
            return []
        leg.local = "failed"
        leg.unacked = leg.unacked or event.unacked
        if self.ended or leg.ringing:
            # It rang already (e.g. by APNs, and this was the replay): it still does.
            return []
        return self._push_or_give_up(leg) + self._check_unreachable(now)

    def _push_result(self, event: PushResult, now: float) -> list[Action]:
        leg = self.legs[event.device_id]
        if leg.apns != "sent":
            return []
        if event.status == "accepted":
            leg.apns = "accepted"
            self._tell(leg, now)
            if not self.ended:
                return self._ring(leg)
            if leg.cancel_reason is None:
                return self._cancel_leg(leg)
            if leg.cancel_delivered:
                return []
            # The call ended while this push was in flight: the cancel then
            # went nowhere (no session, device not yet told). Now the device
            # knows of the call, so it is owed the cancel and, for a missed
            # call, the alert.
            return [
                SendCancel(
                    leg.device_id, leg.cancel_reason, self._missed, leg.alert_token
                )
            ]
        if event.status == "rate_limited":
            leg.apns = "rate_limited"
        elif event.status == "rejected":
            leg.apns = f"rejected={event.reason or 'unknown'}"
        else:
            leg.apns = f"failed={event.reason or 'unknown'}"
        leg.dead = True
        return [] if self.ended else self._check_unreachable(now)

    def _device_report(self, event: DeviceReport, now: float) -> list[Action]:
        leg = self.legs[event.device_id]
        self._tell(leg, now)
        if self.ended:
            return []
        if event.event == "ringing":
            return self._ring(leg)
        if event.event == "answered":
            self.answered_by = leg.device_id
            return [
                SendCancel(o.device_id, "answered_elsewhere", False, o.alert_token)
                for o in self._others(leg)
                if self._mark_cancelled(o, "answered_elsewhere")
            ]
        if event.event == "declined":
            leg.declined = True
            return self._maybe_declined(leg, now)
        if event.event == "failed":
            leg.dead = True
            leg.ringing = False
            return self._check_unreachable(now)
        return []

    def _cancelled(self, event: Cancelled, now: float) -> list[Action]:
        if self.ended:
            return []
        missed = event.reason == "remote_ended" and self.answered_by is None
        return self._end(now, "cancelled", _CANCELLED, event.reason, missed=missed)

    def _ring_timeout(self, event: RingTimeout, now: float) -> list[Action]:
        if self.ended:
            return []
        missed = self.answered_by is None
        return self._end(now, "unanswered", _UNANSWERED, "unanswered", missed=missed)

    def _cancel_delivered(self, event: CancelDelivered, now: float) -> list[Action]:
        self.legs[event.device_id].cancel_delivered = True
        return []

    def _resumed(self, event: Resumed, now: float) -> list[Action]:
        """localpush.md "Resuming a call": replay what the device must know."""
        leg = self.legs[event.device_id]
        if leg.declined or leg.device_id == self.answered_by:
            return []
        if leg.cancel_reason is not None:
            recent = leg.told_at is not None and now - leg.told_at <= self.resume_window
            if leg.cancel_delivered or not recent:
                return []
            return [SendCancel(leg.device_id, leg.cancel_reason, False, None)]
        if self.ended:
            return []
        # Still ringing: the app learns of it (again) over this connection, and
        # any later cancel goes the same way.
        leg.local = "sent"
        leg.dead = False
        return [SendCall(leg.device_id)]

    # -- helpers ----------------------------------------------------------------

    def _push_or_give_up(self, leg: _Leg) -> list[Action]:
        if leg.apns or leg.voip_token is None:
            # One VoIP push per call and device, never a second.
            leg.dead = True
            return []
        leg.apns = "sent"
        return [SendVoipPush(leg.device_id, leg.voip_token)]

    def _tell(self, leg: _Leg, now: float) -> None:
        if not leg.told:
            leg.told = True
            leg.told_at = now

    def _ring(self, leg: _Leg) -> list[Action]:
        leg.ringing = True
        if self.rang:
            return []
        self.rang = True
        return [_RINGING]

    def _others(self, leg: _Leg) -> list[_Leg]:
        return [o for o in self.legs.values() if o is not leg]

    def _mark_cancelled(self, leg: _Leg, reason: str) -> bool:
        """Record a cancel for a contacted device; False if nothing to tell."""
        if leg.cancel_reason is not None or leg.declined or not leg.contacted:
            return False
        leg.cancel_reason = reason
        return True

    def _cancel_leg(self, leg: _Leg) -> list[Action]:
        """A device learnt of the call after it ended: tell it at once."""
        reason = self.outcome_reason or "failed"
        if not self._mark_cancelled(leg, reason):
            return []
        return [SendCancel(leg.device_id, reason, self._missed, leg.alert_token)]

    def _maybe_declined(self, leg: _Leg, now: float) -> list[Action]:
        live = [o for o in self.legs.values() if not o.dead]
        if self.decline_policy == "all" and not all(o.declined for o in live):
            return []
        return self._end(now, "declined", _DECLINED, "declined_elsewhere")

    def _check_unreachable(self, now: float) -> list[Action]:
        """No device left that could ring: 480 (or 486 if rate limiting did it)."""
        if self.ended or any(not leg.dead for leg in self.legs.values()):
            return []
        if any(leg.apns == "rate_limited" for leg in self.legs.values()):
            return self._end(now, "rate_limited", _RATE_LIMITED)
        return self._end(now, "unreachable", _UNREACHABLE)

    def _end(
        self,
        now: float,
        outcome: str,
        final: Final,
        reason: str = "failed",
        *,
        missed: bool = False,
    ) -> list[Action]:
        self.outcome = outcome
        self.outcome_reason = reason
        self._missed = missed
        self.ended_at = now
        self.final = final
        actions: list[Action] = [final]
        for leg in self.legs.values():
            if leg.device_id == self.answered_by:
                continue
            if self._mark_cancelled(leg, reason):
                actions.append(
                    SendCancel(
                        leg.device_id, reason, missed and leg.told, leg.alert_token
                    )
                )
        return actions


# The transition table: one handler per event type. A module-level table, not
# bound methods on each Call, so an ended call holds no reference cycle and is
# freed by reference counting alone.
_HANDLERS: dict[type, Callable[..., list[Action]]] = {
    LocalAcked: Call._local_acked,
    LocalFailed: Call._local_failed,
    PushResult: Call._push_result,
    DeviceReport: Call._device_report,
    Cancelled: Call._cancelled,
    RingTimeout: Call._ring_timeout,
    CancelDelivered: Call._cancel_delivered,
    Resumed: Call._resumed,
}
