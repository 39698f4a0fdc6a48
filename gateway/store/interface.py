"""The registry as the rest of the gateway sees it.

Reads are synchronous and come from memory: the call path must never wait on
disk. Writes return a Deferred that fires once the change is durable; the
change is visible to reads at once. A server database can implement the same
protocol later.
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.defer import Deferred

from gateway.store.model import Binding, Device, PendingMessage

__all__ = ["DeviceStore"]


class DeviceStore(Protocol):
    """Devices, bindings and pending messages."""

    def get_device(self, device_id: str) -> Device | None:
        """The device, or None."""

    def devices_for_aor(self, aor: str) -> list[Device]:
        """Devices that ring for ``aor`` (normalised), in device_id order."""

    def devices(self) -> list[Device]:
        """Every device (for the control API and tests)."""

    def put_device(self, device: Device) -> Deferred[None]:
        """Create or replace a device."""

    def delete_device(self, device_id: str) -> Deferred[bool]:
        """Remove a device, its messages and its lpc bindings."""

    def remove_token(self, token: str) -> Deferred[int]:
        """Forget an APNs token APNs rejected, wherever it is used."""

    def bindings_for_aor(self, aor: str, now: float) -> list[Binding]:
        """Unexpired bindings of ``aor``."""

    def put_binding(self, binding: Binding) -> Deferred[None]:
        """Create or refresh a binding."""

    def remove_binding(self, key: tuple[str, str, str]) -> Deferred[bool]:
        """Remove one binding."""

    def pending_messages(self, device_id: str, now: float) -> list[PendingMessage]:
        """Unexpired messages for the device, oldest first."""

    def add_message(self, message: PendingMessage) -> Deferred[None]:
        """Store a message; fires once it is durable."""

    def ack_message(self, device_id: str, message_id: str) -> Deferred[bool]:
        """The device has the message: forget it."""

    def purge_expired(self, now: float) -> Deferred[int]:
        """Drop expired bindings and messages; fires with how many."""
