"""The registry: an in-memory index in front of a durable persister.

Every read is a dict lookup on the reactor thread. Every write updates the
index at once and hands an op to the persister, whose Deferred fires when the
op is on disk: callers that acknowledge something to a peer (a REGISTER's
200, a MESSAGE's 202) wait for it.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from gateway.observers import guard
from gateway.store.model import Binding, Device, PendingMessage
from gateway.store.ops import (
    DeleteBinding,
    DeleteDevice,
    DeleteMessage,
    Op,
    PurgeExpired,
    PutBinding,
    PutDevice,
    PutMessage,
)

__all__ = ["MemoryPersister", "Persister", "Registry", "Snapshot", "WriteObserver"]

_R = TypeVar("_R")


@attrs.frozen
class Snapshot:
    """Everything a persister holds, read once at start."""

    devices: list[Device] = attrs.field(factory=list)
    bindings: list[Binding] = attrs.field(factory=list)
    messages: list[PendingMessage] = attrs.field(factory=list)


class Persister(Protocol):
    """Durable storage behind the registry."""

    def load(self) -> Snapshot:
        """Read everything (at start-up, before serving)."""

    def submit(self, ops: list[Op]) -> Deferred[None]:
        """Apply ``ops`` atomically, in submission order."""

    def close(self) -> Deferred[None]:
        """Finish pending writes and release the storage."""


class MemoryPersister:
    """Keeps nothing: for tests and for a gateway that wants no disk."""

    def __init__(self, snapshot: Snapshot | None = None) -> None:
        self.snapshot = snapshot or Snapshot()
        self.submitted: list[Op] = []

    def load(self) -> Snapshot:
        return self.snapshot

    def submit(self, ops: list[Op]) -> Deferred[None]:
        self.submitted.extend(ops)
        return succeed(None)

    def close(self) -> Deferred[None]:
        return succeed(None)


class WriteObserver(Protocol):
    """Hears how each registry write ended (metrics)."""

    def store_write(self, op: str, seconds: float, ok: bool) -> None:
        """``op`` (the write method's name) was durable (``ok``) or failed,
        ``seconds`` after it was asked for."""


class Registry(Service):
    """Implements ``DeviceStore``; loads on start, purges on a timer."""

    log = Logger()

    def __init__(
        self, persister: Persister, clock: IReactorTime, purge_interval_s: float = 60.0
    ) -> None:
        self._persister = persister
        self._clock = clock
        self._purge_interval_s = purge_interval_s
        self._purger: LoopingCall | None = None
        self._devices: dict[str, Device] = {}
        # Tuples, not dicts: most AORs have one or two devices, and 100k
        # small dicts cost more memory than the devices themselves.
        self._by_aor: dict[str, tuple[Device, ...]] = {}
        self._bindings: dict[str, dict[tuple[str, str, str], Binding]] = {}
        self._messages: dict[str, dict[str, PendingMessage]] = {}
        self.loaded = False
        self._write_observers: list[WriteObserver] = []

    def add_write_observer(self, observer: WriteObserver) -> None:
        """Tell ``observer`` how every write from now on ends."""
        self._write_observers.append(observer)

    def _submit(self, op: str, ops: list[Op]) -> Deferred[None]:
        """Hand ``ops`` to the persister; observers hear when it is done."""
        d = self._persister.submit(ops)
        if self._write_observers:
            began = self._clock.seconds()
            d.addCallbacks(
                self._written,
                self._write_failed,
                callbackArgs=(op, began),
                errbackArgs=(op, began),
            )
        return d

    def _nothing_to_write(self, op: str, result: _R) -> Deferred[_R]:
        """A write with no ops is durable at once: it still counts as one."""
        self._report(op, 0.0, True)
        return succeed(result)

    def _written(self, result: None, op: str, began: float) -> None:
        self._report(op, self._clock.seconds() - began, True)

    def _write_failed(self, failure: Failure, op: str, began: float) -> Failure:
        self._report(op, self._clock.seconds() - began, False)
        return failure

    def _report(self, op: str, seconds: float, ok: bool) -> None:
        for observer in self._write_observers:
            guard(self, "store_write", observer.store_write, op, seconds, ok)

    # -- life cycle ---------------------------------------------------------

    def load(self) -> None:
        """Fill the index from the persister (idempotent)."""
        if self.loaded:
            return
        snap = self._persister.load()
        for device in snap.devices:
            self._index_device(device)
        for binding in snap.bindings:
            self._bindings.setdefault(binding.aor, {})[binding.key] = binding
        for message in snap.messages:
            self._messages.setdefault(message.device_id, {})[message.message_id] = (
                message
            )
        self.loaded = True
        self.log.info(
            "Registry loaded {devices} devices, {bindings} bindings, "
            "{messages} pending messages",
            devices=len(snap.devices),
            bindings=len(snap.bindings),
            messages=len(snap.messages),
        )

    def startService(self) -> None:
        self.load()
        super().startService()  # type: ignore[no-untyped-call]
        purger = LoopingCall(self._purge_tick)
        purger.clock = self._clock
        purger.start(self._purge_interval_s, now=False)
        self._purger = purger

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        if self._purger is not None and self._purger.running:
            self._purger.stop()
        self._purger = None
        return self._persister.close()

    def _purge_tick(self) -> None:
        d = self.purge_expired(self._clock.seconds())
        d.addErrback(lambda f: self.log.failure("Purge failed", f))

    # -- devices ------------------------------------------------------------

    def get_device(self, device_id: str) -> Device | None:
        return self._devices.get(device_id)

    def devices_for_aor(self, aor: str) -> list[Device]:
        found = self._by_aor.get(aor)
        return list(found) if found else []

    def devices(self) -> list[Device]:
        return list(self._devices.values())

    def put_device(self, device: Device) -> Deferred[None]:
        self._unindex_device(device.device_id)
        self._index_device(device)
        return self._submit("put_device", [PutDevice(device)])

    def delete_device(self, device_id: str) -> Deferred[bool]:
        existed = self._unindex_device(device_id)
        self._messages.pop(device_id, None)
        ops: list[Op] = [DeleteDevice(device_id)]
        for aor, bindings in list(self._bindings.items()):
            for key in [k for k in bindings if k[1] == "lpc" and k[2] == device_id]:
                del bindings[key]
                ops.append(DeleteBinding(key))
            if not bindings:
                del self._bindings[aor]
        return self._submit("delete_device", ops).addCallback(lambda _: existed)

    def remove_token(self, token: str) -> Deferred[int]:
        # A scan: APNs rejects tokens rarely, an index would cost every device.
        ops: list[Op] = []
        holders = [
            d for d in self._devices.values() if token in (d.voip_token, d.alert_token)
        ]
        for device in holders:
            updated = attrs.evolve(
                device,
                voip_token=None if device.voip_token == token else device.voip_token,
                alert_token=None if device.alert_token == token else device.alert_token,
            )
            self._unindex_device(device.device_id)
            self._index_device(updated)
            ops.append(PutDevice(updated))
        for aor, bindings in list(self._bindings.items()):
            for key in [k for k in bindings if k[1] == "apns" and k[2] == token]:
                del bindings[key]
                ops.append(DeleteBinding(key))
            if not bindings:
                del self._bindings[aor]
        count = len(ops)
        if not ops:
            return self._nothing_to_write("remove_token", 0)
        return self._submit("remove_token", ops).addCallback(lambda _: count)

    def _index_device(self, device: Device) -> None:
        self._devices[device.device_id] = device
        by_aor = self._by_aor
        for aor in device.aors:
            by_aor[aor] = (*by_aor.get(aor, ()), device)

    def _unindex_device(self, device_id: str) -> bool:
        old = self._devices.pop(device_id, None)
        if old is None:
            return False
        for aor in old.aors:
            rest = tuple(d for d in self._by_aor.get(aor, ()) if d is not old)
            if rest:
                self._by_aor[aor] = rest
            else:
                self._by_aor.pop(aor, None)
        return True

    # -- bindings -----------------------------------------------------------

    def bindings_for_aor(self, aor: str, now: float) -> list[Binding]:
        found = self._bindings.get(aor)
        if not found:
            return []
        return [b for b in found.values() if b.expires_at > now]

    def put_binding(self, binding: Binding) -> Deferred[None]:
        self._bindings.setdefault(binding.aor, {})[binding.key] = binding
        return self._submit("put_binding", [PutBinding(binding)])

    def remove_binding(self, key: tuple[str, str, str]) -> Deferred[bool]:
        bindings = self._bindings.get(key[0], {})
        existed = bindings.pop(key, None) is not None
        if not bindings:
            self._bindings.pop(key[0], None)
        return self._submit("remove_binding", [DeleteBinding(key)]).addCallback(
            lambda _: existed
        )

    # -- messages -----------------------------------------------------------

    def pending_messages(self, device_id: str, now: float) -> list[PendingMessage]:
        found = self._messages.get(device_id)
        if not found:
            return []
        return [m for m in found.values() if m.expires_at > now]

    def add_message(self, message: PendingMessage) -> Deferred[None]:
        self._messages.setdefault(message.device_id, {})[message.message_id] = message
        return self._submit("add_message", [PutMessage(message)])

    def ack_message(self, device_id: str, message_id: str) -> Deferred[bool]:
        messages = self._messages.get(device_id, {})
        existed = messages.pop(message_id, None) is not None
        if not messages:
            self._messages.pop(device_id, None)
        if not existed:
            return self._nothing_to_write("ack_message", False)
        return self._submit(
            "ack_message", [DeleteMessage(device_id, message_id)]
        ).addCallback(lambda _: True)

    def purge_expired(self, now: float) -> Deferred[int]:
        count = 0
        for aor, bindings in list(self._bindings.items()):
            for key, b in list(bindings.items()):
                if b.expires_at <= now:
                    del bindings[key]
                    count += 1
            if not bindings:
                del self._bindings[aor]
        for device_id, messages in list(self._messages.items()):
            for message_id, m in list(messages.items()):
                if m.expires_at <= now:
                    del messages[message_id]
                    count += 1
            if not messages:
                del self._messages[device_id]
        if count:
            self.log.info("Purged {count} expired bindings and messages", count=count)
        return self._submit("purge_expired", [PurgeExpired(now)]).addCallback(
            lambda _: count
        )
