"""Changes the registry hands to its persister, in the order they happened."""

from __future__ import annotations

import attrs

from gateway.store.model import Binding, Device, PendingMessage

__all__ = [
    "DeleteBinding",
    "DeleteDevice",
    "DeleteMessage",
    "Op",
    "PurgeExpired",
    "PutBinding",
    "PutDevice",
    "PutMessage",
]


@attrs.frozen
class PutDevice:
    device: Device


@attrs.frozen
class DeleteDevice:
    device_id: str


@attrs.frozen
class PutBinding:
    binding: Binding


@attrs.frozen
class DeleteBinding:
    key: tuple[str, str, str]


@attrs.frozen
class PutMessage:
    message: PendingMessage


@attrs.frozen
class DeleteMessage:
    device_id: str
    message_id: str


@attrs.frozen
class PurgeExpired:
    now: float


Op = (
    PutDevice
    | DeleteDevice
    | PutBinding
    | DeleteBinding
    | PutMessage
    | DeleteMessage
    | PurgeExpired
)
