"""The device registry: CRUD, expiry, durability across restarts and kill -9."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import attrs
import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from gateway.store import (
    Binding,
    Device,
    MemoryPersister,
    PendingMessage,
    Registry,
    SQLitePersister,
)
from gateway.store.ops import Op, PurgeExpired
from gateway.store.sqlite import SCHEMA_VERSION, migrate


class _InlineReactor:
    """callFromThread for an inline persister: nothing crosses threads."""

    def callFromThread(self, f: object, *args: object) -> None:
        raise AssertionError("inline persister must not call back from a thread")


def _device(n: int, **kw: object) -> Device:
    base = Device(
        device_id=f"dev-{n}",
        aors=(f"sip:user{n}@example.com",),
        voip_token=f"{n:064x}",
        alert_token=f"{n + 1:064x}",
        topic="com.example.voip",
        locale="de-DE",
        app_version="2.4.1",
        last_seen=100.0,
    )
    return attrs.evolve(base, **kw)


def _message(
    n: int, device_id: str = "dev-1", expires_at: float = 1000.0
) -> PendingMessage:
    return PendingMessage(
        message_id=f"m{n}",
        device_id=device_id,
        body=f"hello {n}",
        sender_handle="+4930123",
        sender_display_name="Alice",
        sent_at=float(n),
        expires_at=expires_at,
    )


class RegistryTests(SynchronousTestCase):
    """The in-memory index, whatever the persister."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.persister = MemoryPersister()
        self.registry = Registry(self.persister, self.clock, purge_interval_s=10)
        self.registry.startService()
        self.addCleanup(self.registry.stopService)

    def test_device_crud_and_aor_index(self) -> None:
        """Devices are found by id and AOR; replacing one re-indexes its AORs."""
        r = self.registry
        self.successResultOf(r.put_device(_device(1)))
        self.successResultOf(r.put_device(_device(2, aors=("sip:user1@example.com",))))
        assert [d.device_id for d in r.devices_for_aor("sip:user1@example.com")] == [
            "dev-1",
            "dev-2",
        ]
        self.successResultOf(r.put_device(_device(1, aors=("sip:new@example.com",))))
        assert [d.device_id for d in r.devices_for_aor("sip:user1@example.com")] == [
            "dev-2"
        ]
        assert r.devices_for_aor("sip:new@example.com")[0].device_id == "dev-1"
        assert self.successResultOf(r.delete_device("dev-1")) is True
        assert self.successResultOf(r.delete_device("dev-1")) is False
        assert r.get_device("dev-1") is None
        assert r.devices_for_aor("sip:new@example.com") == []
        assert [d.device_id for d in r.devices()] == ["dev-2"]

    def test_remove_token_clears_devices_and_bindings(self) -> None:
        """A token APNs rejected disappears from devices and apns bindings alike."""
        r = self.registry
        dev = _device(1)
        self.successResultOf(r.put_device(dev))
        token = dev.voip_token
        assert token is not None
        binding = Binding("sip:bob@example.com", "apns", token, "T.com.x.voip", 500.0)
        self.successResultOf(r.put_binding(binding))
        assert self.successResultOf(r.remove_token(token)) == 2
        updated = r.get_device("dev-1")
        assert updated is not None
        assert updated.voip_token is None
        assert updated.alert_token == dev.alert_token
        assert r.bindings_for_aor("sip:bob@example.com", now=0) == []
        assert self.successResultOf(r.remove_token(token)) == 0

    def test_bindings_expire_by_clock_and_purge(self) -> None:
        """Expired bindings are invisible at once and purged by the timer."""
        r = self.registry
        b1 = Binding("sip:bob@example.com", "lpc", "dev-1", "", expires_at=15.0)
        b2 = Binding("sip:bob@example.com", "apns", "ab" * 32, "", expires_at=25.0)
        self.successResultOf(r.put_binding(b1))
        self.successResultOf(r.put_binding(b2))
        assert r.bindings_for_aor("sip:bob@example.com", now=14) == [b1, b2]
        assert r.bindings_for_aor("sip:bob@example.com", now=15) == [b2]
        self.clock.advance(10)  # purge at t=10
        self.clock.advance(10)  # purge at t=20
        assert r.bindings_for_aor("sip:bob@example.com", now=0) == [b2]
        self.clock.advance(10)
        assert r.bindings_for_aor("sip:bob@example.com", now=0) == []
        purges = [op for op in self.persister.submitted if isinstance(op, PurgeExpired)]
        assert [p.now for p in purges] == [10.0, 20.0, 30.0]

    def test_binding_refresh_and_removal(self) -> None:
        """A REGISTER refresh replaces the binding; removal reports existence."""
        r = self.registry
        b = Binding("sip:bob@example.com", "lpc", "dev-1", "", expires_at=15.0)
        self.successResultOf(r.put_binding(b))
        self.successResultOf(r.put_binding(attrs.evolve(b, expires_at=99.0)))
        assert r.bindings_for_aor("sip:bob@example.com", now=50) == [
            attrs.evolve(b, expires_at=99.0)
        ]
        assert self.successResultOf(r.remove_binding(b.key)) is True
        assert self.successResultOf(r.remove_binding(b.key)) is False

    def test_messages_oldest_first_ack_and_expiry(self) -> None:
        """Pending messages come oldest first, go on ack, vanish when expired."""
        r = self.registry
        for n in (1, 2, 3):
            self.successResultOf(r.add_message(_message(n, expires_at=10.0 * n)))
        assert [m.message_id for m in r.pending_messages("dev-1", now=0)] == [
            "m1",
            "m2",
            "m3",
        ]
        assert self.successResultOf(r.ack_message("dev-1", "m2")) is True
        assert self.successResultOf(r.ack_message("dev-1", "m2")) is False
        assert [m.message_id for m in r.pending_messages("dev-1", now=10)] == ["m3"]
        assert self.successResultOf(r.purge_expired(now=10)) == 1
        assert [m.message_id for m in r.pending_messages("dev-1", now=0)] == ["m3"]

    def test_delete_device_drops_its_messages_and_lpc_bindings(self) -> None:
        """Deleting a device leaves nothing of it behind."""
        r = self.registry
        self.successResultOf(r.put_device(_device(1)))
        self.successResultOf(r.add_message(_message(1)))
        b = Binding("sip:bob@example.com", "lpc", "dev-1", "", expires_at=99.0)
        self.successResultOf(r.put_binding(b))
        self.successResultOf(r.delete_device("dev-1"))
        assert r.pending_messages("dev-1", now=0) == []
        assert r.bindings_for_aor("sip:bob@example.com", now=0) == []


def _sqlite_registry(path: Path, clock: Clock) -> Registry:
    persister = SQLitePersister(path, _InlineReactor(), threaded=False)  # type: ignore[arg-type]
    registry = Registry(persister, clock)
    registry.startService()
    return registry


def test_sqlite_persistence_across_restart(tmp_path: Path) -> None:
    """Everything written is there again after the service restarts."""
    clock = Clock()
    db = tmp_path / "db" / "voipgw.sqlite3"
    r = _sqlite_registry(db, clock)
    r.put_device(_device(1))
    r.put_device(_device(2))
    r.delete_device("dev-2")
    r.put_binding(Binding("sip:bob@example.com", "apns", "ab" * 32, "T.x.voip", 500.0))
    r.add_message(_message(1))
    r.add_message(_message(2))
    r.ack_message("dev-1", "m1")
    r.stopService()

    again = _sqlite_registry(db, clock)
    assert again.get_device("dev-1") == _device(1)
    assert again.get_device("dev-2") is None
    assert again.devices_for_aor("sip:user1@example.com") == [_device(1)]
    assert [b.prid for b in again.bindings_for_aor("sip:bob@example.com", 0)] == [
        "ab" * 32
    ]
    assert [m.message_id for m in again.pending_messages("dev-1", 0)] == ["m2"]
    again.stopService()


def test_schema_is_versioned_and_newer_refused(tmp_path: Path) -> None:
    """The schema version is recorded; a database from a newer voipgw is refused."""
    db = tmp_path / "v.sqlite3"
    conn = sqlite3.connect(db)
    assert migrate(conn) == SCHEMA_VERSION
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert migrate(conn) == SCHEMA_VERSION  # idempotent
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(RuntimeError, match="newer than this voipgw supports"):
        migrate(conn)
    conn.close()


KILL_CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from twisted.internet import reactor
    from gateway.store import Device, Registry, SQLitePersister, PendingMessage

    def main():
        registry = Registry(SQLitePersister(Path(sys.argv[1]), reactor), reactor)
        registry.startService()
        n = int(sys.argv[2])
        def acked(_, i):
            print("ACK", i, flush=True)
        for i in range(n):
            d = registry.put_device(Device(device_id=f"k{i}", aors=("sip:k@x",)))
            registry.add_message(PendingMessage(f"m{i}", f"k{i}", "b", "h", None, 0.0, 9e9))
            d.addCallback(acked, i)

    reactor.callWhenRunning(main)
    reactor.run()
    """
)


@pytest.mark.integration
def test_sqlite_survives_kill_9(tmp_path: Path) -> None:
    """Writes acknowledged before SIGKILL are all there after a restart."""
    db = tmp_path / "kill.sqlite3"
    script = tmp_path / "child.py"
    script.write_text(KILL_CHILD)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    child = subprocess.Popen(
        [sys.executable, str(script), str(db), "200"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None
    acked = set()
    try:
        for line in child.stdout:
            acked.add(int(line.split()[1]))
            if len(acked) == 200:
                break
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    assert len(acked) == 200
    registry = _sqlite_registry(db, Clock())
    assert {d.device_id for d in registry.devices()} >= {f"k{i}" for i in acked}
    assert len(registry.pending_messages("k199", 0)) == 1
    registry.stopService()


class _SlowPersister(MemoryPersister):
    """Writes become durable when the test says so, or fail."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[Deferred[None]] = []

    def submit(self, ops: list[Op]) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.pending.append(d)
        return d


class _WriteRecorder:
    """A ``WriteObserver`` that records, and raises when told to."""

    def __init__(self, raises: bool = False) -> None:
        self.raises = raises
        self.heard: list[tuple[str, float, bool]] = []

    def store_write(self, op: str, seconds: float, ok: bool) -> None:
        self.heard.append((op, seconds, ok))
        if self.raises:
            raise RuntimeError("observer bug")


def test_write_observers_hear_durable_failed_and_empty_writes() -> None:
    """Observers hear each write's op, duration and success, empty ones at
    once; one that raises is logged and the write's result passes unchanged."""
    clock = Clock()
    persister = _SlowPersister()
    registry = Registry(persister, clock)
    registry.load()
    broken, recorder = _WriteRecorder(raises=True), _WriteRecorder()
    registry.add_write_observer(broken)
    registry.add_write_observer(recorder)
    results: list[object] = []
    with capturedLogs() as events:
        registry.put_device(_device(1)).addCallback(results.append)
        registry.delete_device("dev-1").addErrback(results.append)
        clock.advance(0.5)
        persister.pending[0].callback(None)
        persister.pending[1].errback(RuntimeError("disk"))
        registry.remove_token("nobody").addCallback(results.append)
    assert results[0] is None and results[2] == 0
    assert isinstance(results[1], Failure) and results[1].check(RuntimeError)
    expected = [
        ("put_device", 0.5, True),
        ("delete_device", 0.5, False),
        ("remove_token", 0.0, True),
    ]
    assert recorder.heard == broken.heard == expected
    failures = [e for e in events if "log_failure" in e]
    assert [e["what"] for e in failures] == ["store_write"] * 3
