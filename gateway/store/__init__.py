"""The device registry: devices, SIP push bindings and pending messages."""

from __future__ import annotations

from gateway.store.interface import DeviceStore
from gateway.store.model import APNS_ENVIRONMENTS, Binding, Device, PendingMessage
from gateway.store.registry import (
    MemoryPersister,
    Persister,
    Registry,
    Snapshot,
    WriteObserver,
)
from gateway.store.sqlite import SCHEMA_VERSION, SQLitePersister

__all__ = [
    "APNS_ENVIRONMENTS",
    "SCHEMA_VERSION",
    "Binding",
    "Device",
    "DeviceStore",
    "MemoryPersister",
    "PendingMessage",
    "Persister",
    "Registry",
    "SQLitePersister",
    "Snapshot",
    "WriteObserver",
]
