"""The dispatcher: runs ``Call`` machines against the real delivery paths.

It turns a request (from SIP or the control API) into targets from the
registry and the hub, executes the machine's actions (frames through the
hub, pushes through the APNs client, 180/final through the caller's
listener), feeds results back in, and keeps ended calls for the resume
window so that woken apps learn how they ended. One code path serves SIP and
the API alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from gateway.apns import (
    ApnsNotification,
    Delivered,
    Outcome,
    TokenRejected,
    missed_call_payload,
    voip_notification,
    voip_payload,
)
from gateway.calls.machine import (
    Action,
    Call,
    CallInfo,
    CancelDelivered,
    Cancelled,
    DeviceReport,
    Event,
    Final,
    LocalAcked,
    LocalFailed,
    PushResult,
    Resumed,
    Ringing,
    RingTimeout,
    SendCall,
    SendCancel,
    SendVoipPush,
    Target,
)
from gateway.calls.ratelimit import SlidingWindowLimiter
from gateway.calls.timers import Deadlines
from gateway.ids import new_uuid4
from gateway.localpush.frames import CallCancelFrame, CallFrame, FrameSpec, Party
from gateway.localpush.hub import ACK_TIMEOUT, DeliveryResult, SessionInfo
from gateway.store import Device, DeviceStore
from gateway.targets import alert_for, apns_environment, bundle_for, resolve_targets

__all__ = [
    "ActiveCall",
    "CallListener",
    "CallObserver",
    "CallRequest",
    "Dispatcher",
    "DispatcherSettings",
    "LocalPushPath",
    "PushPath",
]


# Ring timeouts and resume windows closer together than this share one
# reactor wake-up: at most 10 ms late, at most a hundred wake-ups a second.
DEADLINE_GAP_S = 0.01


class LocalPushPath(Protocol):
    """What the dispatcher needs of the local-push hub."""

    def is_online(self, device_id: str) -> bool: ...

    def deliver(
        self, device_id: str, spec: FrameSpec, ack_timeout: float | None = None
    ) -> Deferred[DeliveryResult]: ...


class PushPath(Protocol):
    """What the dispatcher needs of the APNs client."""

    def push(self, notification: ApnsNotification) -> Deferred[Outcome]: ...


class CallListener(Protocol):
    """Who hears of a call's progress: the SIP transaction or the API."""

    def call_ringing(self, call: ActiveCall) -> None: ...

    def call_ended(self, call: ActiveCall) -> None: ...


class CallObserver(Protocol):
    """Hears of every call the dispatcher starts, SIP and API alike (metrics,
    webhooks); unlike a ``CallListener`` it is not tied to one call."""

    def call_started(self, call: ActiveCall) -> None:
        """The call is registered and about to ring its devices."""

    def call_ringing(self, call: ActiveCall) -> None:
        """A device rings (once per call, before the call's listener hears)."""

    def call_ended(self, call: ActiveCall) -> None:
        """The call has its outcome (before the call's listener hears)."""


@attrs.frozen
class DispatcherSettings:
    """The [calls] section plus the few other settings calls depend on."""

    ring_timeout_s: float = 30.0
    ack_timeout_s: float = 3.0
    resume_window_s: float = 60.0
    decline_policy: str = "all"
    callee_push_limit: int = 10
    callee_push_window_s: float = 60.0
    caller_push_limit: int = 30
    caller_push_window_s: float = 60.0
    bundle_id: str = ""


@attrs.frozen
class CallRequest:
    """A call to ring: an AOR's devices, or explicit device ids (control API)."""

    aor: str
    caller_handle: str
    caller_display_name: str | None = None
    video: bool = False
    headers: tuple[tuple[str, str], ...] = ()
    call_id: str | None = None
    ring_timeout_s: float | None = None  # e.g. the INVITE's Expires, a cap
    device_ids: tuple[str, ...] | None = None


class ActiveCall:
    """A call in progress or recently ended, as SIP and the API see it.

    Slotted and timer-free (the dispatcher's ``Deadlines`` hold its ring
    timeout and resume window by call id): an ended call is kept for the
    resume window, so every object it owns is one more for the GC to walk.
    """

    __slots__ = (
        "__weakref__",
        "deadline",
        "devices",
        "listener",
        "machine",
        "pushed",
        "request",
    )

    def __init__(
        self,
        request: CallRequest,
        machine: Call,
        devices: dict[str, Device | None],
        listener: CallListener,
        deadline: float,
    ) -> None:
        self.request = request
        self.machine = machine
        self.devices = devices
        self.listener = listener
        self.deadline = deadline
        self.pushed = False  # counted against the push rate limits once

    @property
    def call_id(self) -> str:
        return self.machine.info.call_id

    @property
    def push_status(self) -> str:
        return self.machine.push_status()

    @property
    def final(self) -> Final | None:
        return self.machine.final

    def device_states(self) -> dict[str, dict[str, Any]]:
        """Per device: path taken, acked, ringing, declined, how it ended."""
        return {
            device_id: {
                "path": leg.push_status().split(";", 1)[0],
                "status": leg.push_status(),
                "acked": leg.local == "acked",
                "ringing": leg.ringing,
                "declined": leg.declined,
                "ended": leg.cancel_reason,
            }
            for device_id, leg in self.machine.legs.items()
        }


class Dispatcher:
    """Rings devices for calls; is the hub's session listener."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        registry: DeviceStore,
        hub: LocalPushPath,
        apns: PushPath | None,
        settings: DispatcherSettings,
        *,
        new_call_id: Callable[[], str] = new_uuid4,
    ) -> None:
        self._clock = clock
        self._registry = registry
        self._hub = hub
        self._apns = apns
        self.settings = settings
        self._new_call_id = new_call_id
        self._calls: dict[str, ActiveCall] = {}
        self._by_device: dict[str, set[str]] = {}
        self._observers: list[CallObserver] = []
        # One entry per call: the ring timeout while it rings, then the end
        # of its resume window.
        self._deadlines = Deadlines(clock, self._deadline, gap=DEADLINE_GAP_S)
        self._callee_limit = SlidingWindowLimiter(
            settings.callee_push_limit, settings.callee_push_window_s
        )
        self._caller_limit = SlidingWindowLimiter(
            settings.caller_push_limit, settings.caller_push_window_s
        )

    def add_observer(self, observer: CallObserver) -> None:
        """Tell ``observer`` of every call from now on."""
        self._observers.append(observer)

    # -- queries ----------------------------------------------------------------

    def get(self, call_id: str) -> ActiveCall | None:
        """A call in progress, or ended within the resume window."""
        return self._calls.get(call_id)

    @property
    def held_count(self) -> int:
        """Calls in progress or ended within the resume window."""
        return len(self._calls)

    @property
    def active_count(self) -> int:
        return sum(1 for c in self._calls.values() if not c.machine.ended)

    def targets_for(self, request: CallRequest) -> dict[str, Device | None]:
        """Devices to ring: by AOR (claims, API, bindings) or explicit ids."""
        return resolve_targets(
            self._registry, self._clock.seconds(), request.aor, request.device_ids
        )

    # -- commands ---------------------------------------------------------------

    def start(self, request: CallRequest, listener: CallListener) -> ActiveCall | None:
        """Ring the request's devices; None if it has none (SIP: 404)."""
        devices = self.targets_for(request)
        if not devices:
            return None
        call_id = request.call_id or self._new_call_id()
        if call_id in self._calls:
            raise ValueError(f"call_id {call_id} is in use")
        now = self._clock.seconds()
        ring = self.settings.ring_timeout_s
        if request.ring_timeout_s is not None:
            ring = max(0.0, min(ring, request.ring_timeout_s))
        info = CallInfo(
            call_id=call_id,
            to=request.aor,
            caller_handle=request.caller_handle,
            caller_display_name=request.caller_display_name,
            video=request.video,
            headers=request.headers,
        )
        targets = [
            Target(
                device_id=device_id,
                online=self._hub.is_online(device_id),
                voip_token=device.voip_token if device and self._apns else None,
                alert_token=device.alert_token if device and self._apns else None,
            )
            for device_id, device in devices.items()
        ]
        machine = Call(
            info,
            targets,
            now=now,
            decline_policy=self.settings.decline_policy,
            resume_window=self.settings.resume_window_s,
        )
        call = ActiveCall(request, machine, devices, listener, deadline=now + ring)
        self._calls[call_id] = call
        for device_id in devices:
            self._by_device.setdefault(device_id, set()).add(call_id)
        # No log line here: the one line per call is its outcome (_finished),
        # which names the AOR and, in the push status, each device.
        self._deadlines.set(call_id, now + ring)
        for observer in self._observers:
            self._notify(observer.call_started, call)
        self._run(call, machine.start())
        return call

    def cancel(self, call_id: str, reason: str) -> bool:
        """The caller's side ended the call; False if unknown or already over."""
        call = self._calls.get(call_id)
        if call is None or call.machine.ended:
            return False
        self._feed(call, Cancelled(reason))
        return True

    # -- SessionListener --------------------------------------------------------

    def on_session_up(self, device_id: str, info: SessionInfo) -> None:
        for call_id in sorted(self._by_device.get(device_id, ())):
            call = self._calls.get(call_id)
            if call is not None:
                self._feed(call, Resumed(device_id))

    def on_session_down(self, device_id: str, reason: str) -> None:
        """Nothing to do: pending frames fire not-delivered through the hub."""

    def on_call_event(self, device_id: str, call_id: str, event: str) -> None:
        call = self._calls.get(call_id)
        if call is None or device_id not in call.machine.legs:
            return  # unknown or ended call: ignored (localpush.md)
        self._feed(call, DeviceReport(device_id, event))

    # -- the loop ---------------------------------------------------------------

    def _deadline(self, call_id: str) -> None:
        """A call's ring timeout, or the end of an ended call's resume window."""
        call = self._calls.get(call_id)
        if call is None:
            return
        if call.machine.ended:
            self._forget(call)
        else:
            self._feed(call, _RING_TIMEOUT)

    def _feed(self, call: ActiveCall, event: Event) -> None:
        self._run(call, call.machine.handle(event, self._clock.seconds()))

    def _run(self, call: ActiveCall, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, SendCall):
                self._send_call(call, action.device_id)
            elif isinstance(action, SendVoipPush):
                self._send_push(call, action)
            elif isinstance(action, SendCancel):
                self._send_cancel(call, action)
            elif isinstance(action, Ringing):
                for observer in self._observers:
                    self._notify(observer.call_ringing, call)
                self._notify(call.listener.call_ringing, call)
            elif isinstance(action, Final):
                self._finished(call)

    def _send_call(self, call: ActiveCall, device_id: str) -> None:
        info = call.machine.info
        frame = CallFrame(
            call_id=info.call_id,
            caller=Party(
                handle=info.caller_handle, display_name=info.caller_display_name
            ),
            video=info.video,
            to=info.to,
            expires_at=call.deadline,
            headers=info.headers,
        )
        d = self._hub.deliver(device_id, frame, self.settings.ack_timeout_s)

        def done(result: DeliveryResult) -> None:
            if result.delivered:
                self._feed(call, LocalAcked(device_id))
            else:
                reason = result.reason or "failed"
                unacked = reason == ACK_TIMEOUT
                self._feed(call, LocalFailed(device_id, reason, unacked))

        d.addCallback(done).addErrback(self._log_failure, "call frame")

    def _send_push(self, call: ActiveCall, action: SendVoipPush) -> None:
        device_id = action.device_id
        now = self._clock.seconds()
        if not call.pushed:
            callee, caller = call.request.aor, call.request.caller_handle
            if not (
                self._callee_limit.allowed(callee, now)
                and self._caller_limit.allowed(caller, now)
            ):
                self._feed(call, PushResult(device_id, "rate_limited"))
                return
            self._callee_limit.hit(callee, now)
            self._caller_limit.hit(caller, now)
            call.pushed = True
        assert self._apns is not None  # targets carry tokens only with APNs
        info = call.machine.info
        device = call.devices.get(device_id)
        notification = voip_notification(
            device_token=action.voip_token,
            environment=apns_environment(device),
            bundle_id=bundle_for(device, self.settings.bundle_id),
            payload=voip_payload(
                call_uuid=info.call_id,
                handle=info.caller_handle,
                display_name=info.caller_display_name,
                video=info.video,
                to=info.to,
                headers=dict(info.headers),
            ),
            deadline=call.deadline,
        )

        def done(outcome: Outcome) -> None:
            if isinstance(outcome, Delivered):
                result = PushResult(device_id, "accepted")
            elif isinstance(outcome, TokenRejected):
                result = PushResult(device_id, "rejected", outcome.reason)
            else:
                result = PushResult(device_id, "failed", _reason(outcome))
            self._feed(call, result)

        d = self._apns.push(notification)
        d.addCallback(done).addErrback(self._push_error, call, device_id)

    def _push_error(self, failure: Any, call: ActiveCall, device_id: str) -> None:
        self.log.failure("VoIP push failed unexpectedly", failure)
        self._feed(call, PushResult(device_id, "failed", "InternalError"))

    def _send_cancel(self, call: ActiveCall, action: SendCancel) -> None:
        device_id = action.device_id
        if self._hub.is_online(device_id):
            frame = CallCancelFrame(call_id=call.call_id, reason=action.reason)
            d = self._hub.deliver(device_id, frame, self.settings.ack_timeout_s)

            def done(result: DeliveryResult) -> None:
                if result.delivered:
                    self._feed(call, CancelDelivered(device_id))
                elif action.missed:
                    self._missed_alert(call, device_id, action.alert_token)

            d.addCallback(done).addErrback(self._log_failure, "call_cancel frame")
        elif action.missed:
            self._missed_alert(call, device_id, action.alert_token)

    def _missed_alert(
        self, call: ActiveCall, device_id: str, alert_token: str | None
    ) -> None:
        if alert_token is None or self._apns is None:
            return
        info = call.machine.info
        notification = alert_for(
            call.devices.get(device_id),
            alert_token,
            missed_call_payload(
                call_uuid=info.call_id, display_name=info.caller_display_name
            ),
            default_bundle=self.settings.bundle_id,
            now=self._clock.seconds(),
        )
        d = self._apns.push(notification)
        d.addErrback(self._log_failure, "missed-call alert")

    def _finished(self, call: ActiveCall) -> None:
        outcome = call.machine.outcome or "unknown"
        self.log.info(
            "Call {call_id} to {aor} ended: {outcome} ({status})",
            call_id=call.call_id,
            aor=call.request.aor,
            outcome=outcome,
            status=call.push_status,
        )
        for observer in self._observers:
            self._notify(observer.call_ended, call)
        self._notify(call.listener.call_ended, call)
        # Kept for the resume window, an ended call needs only its machine:
        # let the listener (and the SIP request it holds) go, so calls held
        # for replay cost few objects for the GC to walk.
        call.listener = _ENDED
        # Replaces the ring timeout.
        self._deadlines.set(
            call.call_id, self._clock.seconds() + self.settings.resume_window_s
        )

    def _forget(self, call: ActiveCall) -> None:
        self._calls.pop(call.call_id, None)
        for device_id in call.devices:
            ids = self._by_device.get(device_id)
            if ids is not None:
                ids.discard(call.call_id)
                if not ids:
                    del self._by_device[device_id]

    def stop(self) -> None:
        """Drop every timer (service stop); calls still ringing just end."""
        self._deadlines.stop()
        self._calls.clear()
        self._by_device.clear()

    def _notify(self, fn: Callable[[ActiveCall], None], call: ActiveCall) -> None:
        try:
            fn(call)
        except Exception:  # noqa: BLE001 - one listener's bug must not stop the call
            self.log.failure(
                "Call listener or observer failed for {call_id}", call_id=call.call_id
            )

    def _log_failure(self, failure: Any, what: str) -> None:
        self.log.failure("Unexpected error delivering {what}", failure, what=what)


class _EndedListener:
    """Stands in for the listener of an ended call: it hears nothing more."""

    def call_ringing(self, call: ActiveCall) -> None:
        """Nothing: the call is over."""

    def call_ended(self, call: ActiveCall) -> None:
        """Nothing: it was told already."""


_ENDED = _EndedListener()
_RING_TIMEOUT = RingTimeout()


def _reason(outcome: Outcome) -> str:
    reason = getattr(outcome, "reason", None)
    return str(reason) if reason else type(outcome).__name__
