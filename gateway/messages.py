"""Text messages (SIP MESSAGE, control API): store first, then deliver.

localpush.md: a message is stored until the device acks it and is sent again
on the device's next session, oldest first, until acked or expired. Where no
session is open it also goes out as an alert push (calls.md "Message
alert"). The Deferred of ``send`` fires once every copy is durable, which is
when SIP answers 202.
"""

from __future__ import annotations

from typing import Any, Protocol

import attrs
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from gateway.apns import message_payload
from gateway.calls.dispatcher import LocalPushPath, PushPath
from gateway.directory import stored_message
from gateway.ids import new_uuid4
from gateway.localpush.hub import DeliveryResult
from gateway.observers import guard
from gateway.store import Device, DeviceStore, PendingMessage
from gateway.targets import alert_for, resolve_targets

__all__ = ["MessageObserver", "MessageRequest", "MessageResult", "Messenger"]


@attrs.frozen
class MessageRequest:
    """A message to an AOR's devices, or to explicit devices."""

    sender_handle: str
    body: str
    aor: str | None = None
    sender_display_name: str | None = None
    device_ids: tuple[str, ...] | None = None
    message_id: str | None = None


@attrs.frozen
class MessageResult:
    """Stored for these devices, under this id."""

    message_id: str
    device_ids: tuple[str, ...]


class MessageObserver(Protocol):
    """Hears how every ``Messenger.send`` ended, SIP and API alike (metrics,
    webhooks)."""

    def message_stored(self, message_id: str, device_ids: tuple[str, ...]) -> None:
        """Every copy is durable (SIP answers 202 now)."""

    def message_failed(self, message_id: str) -> None:
        """Storing the message failed."""

    def message_no_devices(self) -> None:
        """The request named no device to send to (SIP 404)."""


class Messenger:
    """Stores and delivers messages."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        registry: DeviceStore,
        hub: LocalPushPath,
        apns: PushPath | None,
        *,
        ttl_s: float,
        ack_timeout_s: float,
        bundle_id: str,
    ) -> None:
        self._clock = clock
        self._registry = registry
        self._hub = hub
        self._apns = apns
        self._ttl_s = ttl_s
        self._ack_timeout_s = ack_timeout_s
        self._bundle_id = bundle_id
        self._observers: list[MessageObserver] = []

    def add_observer(self, observer: MessageObserver) -> None:
        """Tell ``observer`` how each message from now on ends."""
        self._observers.append(observer)

    def send(self, request: MessageRequest) -> Deferred[MessageResult] | None:
        """None if the request has no devices (SIP 404)."""
        now = self._clock.seconds()
        devices = resolve_targets(self._registry, now, request.aor, request.device_ids)
        if not devices:
            for observer in self._observers:
                guard(self, "message_no_devices", observer.message_no_devices)
            return None
        message_id = request.message_id or new_uuid4()
        stored: list[tuple[str, Device | None, PendingMessage | None]] = []
        writes: list[Deferred[None]] = []
        for device_id, device in devices.items():
            if device is not None and device.device_id.startswith("apns:"):
                # A REGISTER-bound token: no socket will ever ask for it.
                stored.append((device_id, device, None))
                continue
            message = PendingMessage(
                message_id=message_id,
                device_id=device_id,
                body=request.body,
                sender_handle=request.sender_handle,
                sender_display_name=request.sender_display_name,
                sent_at=now,
                expires_at=now + self._ttl_s,
            )
            writes.append(self._registry.add_message(message))
            stored.append((device_id, device, message))
        result = MessageResult(message_id, tuple(devices))
        d: Deferred[Any] = gatherResults(writes, consumeErrors=True)
        d.addCallback(lambda _: self._deliver(request, stored))
        d.addCallback(lambda _: result)
        if self._observers:
            d.addCallbacks(self._stored, self._failed, errbackArgs=(message_id,))
        return d

    def _stored(self, result: MessageResult) -> MessageResult:
        for observer in self._observers:
            guard(
                self,
                "message_stored",
                observer.message_stored,
                result.message_id,
                result.device_ids,
            )
        return result

    def _failed(self, failure: Failure, message_id: str) -> Failure:
        for observer in self._observers:
            guard(self, "message_failed", observer.message_failed, message_id)
        return failure

    def _deliver(
        self,
        request: MessageRequest,
        stored: list[tuple[str, Device | None, PendingMessage | None]],
    ) -> None:
        for device_id, device, message in stored:
            if message is not None and self._hub.is_online(device_id):
                spec = stored_message(message).to_frame()
                d = self._hub.deliver(device_id, spec, self._ack_timeout_s)
                d.addCallback(self._after_frame, request, device)
            else:
                self._alert(request, device)

    def _after_frame(
        self, result: DeliveryResult, request: MessageRequest, device: Device | None
    ) -> None:
        if not result.delivered:
            # Stored: it goes out again on the next session; tell the user now.
            self._alert(request, device)

    def _alert(self, request: MessageRequest, device: Device | None) -> None:
        if self._apns is None or device is None or not device.alert_token:
            return
        notification = alert_for(
            device,
            device.alert_token,
            message_payload(
                sender=request.sender_handle,
                display_name=request.sender_display_name,
                body=request.body,
            ),
            default_bundle=self._bundle_id,
            now=self._clock.seconds(),
        )
        self._apns.push(notification).addErrback(
            lambda f: self.log.failure("Message alert failed", f)
        )
