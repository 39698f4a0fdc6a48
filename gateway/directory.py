"""The local-push hub's view of the registry (``DeviceDirectory``).

A device's ``hello`` updates its record (AORs from its token, APNs tokens,
topic, environment, locale, app version, last seen); pending messages come
from, and acks go to, the registry's durable message store.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.logger import Logger

from gateway.localpush.frames import Party
from gateway.localpush.hub import SessionInfo, StoredMessage
from gateway.store import Device, DeviceStore, PendingMessage

__all__ = ["RegistryDirectory", "stored_message"]


def stored_message(m: PendingMessage) -> StoredMessage:
    """The registry's record as the hub sends it."""
    return StoredMessage(
        message_id=m.message_id,
        sender=Party(handle=m.sender_handle, display_name=m.sender_display_name),
        body=m.body,
        sent_at=m.sent_at,
        expires_at=m.expires_at,
    )


class RegistryDirectory:
    """Implements the hub's ``DeviceDirectory`` on a ``DeviceStore``."""

    log = Logger()

    def __init__(self, registry: DeviceStore) -> None:
        self._registry = registry

    def device_hello(self, info: SessionInfo) -> None:
        hello = info.hello
        old = self._registry.get_device(info.device_id) or Device(info.device_id)
        # A hello that omits a token keeps the one we have: apps send tokens
        # when they change, not necessarily on every connect.
        device = attrs.evolve(
            old,
            aors=info.claims.aors,
            voip_token=hello.voip_token or old.voip_token,
            alert_token=hello.alert_token or old.alert_token,
            topic=hello.topic or old.topic,
            apns_env=hello.apns_env or old.apns_env,
            locale=hello.locale or old.locale,
            app_version=hello.app_version or old.app_version,
            last_seen=info.connected_at,
        )
        d = self._registry.put_device(device)
        d.addErrback(self._failed, "device_hello")

    def pending_messages(self, device_id: str, now: float) -> list[StoredMessage]:
        return [
            stored_message(m) for m in self._registry.pending_messages(device_id, now)
        ]

    def message_acked(self, device_id: str, message_id: str) -> None:
        self._registry.ack_message(device_id, message_id).addErrback(
            self._failed, "message_acked"
        )

    def _failed(self, failure: Any, what: str) -> None:
        self.log.failure("Registry write for {what} failed", failure, what=what)
