"""SQLite persistence: WAL, a versioned schema, one batching writer thread.

The reactor thread never touches the database after start-up: ops go to a
queue, the writer thread commits whatever has queued up in one transaction
and reports back with ``callFromThread``. In WAL mode with
``synchronous=NORMAL`` a committed transaction survives the process being
killed (``kill -9``); only an OS crash or power loss can lose the last few.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger

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
from gateway.store.registry import Snapshot

__all__ = ["SCHEMA_VERSION", "SQLitePersister"]

# Each entry migrates from version i to i + 1. Never edit a shipped entry.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE devices (
        device_id TEXT PRIMARY KEY,
        aors TEXT NOT NULL,
        voip_token TEXT,
        alert_token TEXT,
        topic TEXT,
        apns_env TEXT NOT NULL,
        locale TEXT,
        app_version TEXT,
        last_seen REAL NOT NULL
    );
    CREATE TABLE bindings (
        aor TEXT NOT NULL,
        provider TEXT NOT NULL,
        prid TEXT NOT NULL,
        param TEXT NOT NULL,
        expires_at REAL NOT NULL,
        PRIMARY KEY (aor, provider, prid)
    );
    CREATE INDEX bindings_expiry ON bindings (expires_at);
    CREATE TABLE messages (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        device_id TEXT NOT NULL,
        message_id TEXT NOT NULL,
        body TEXT NOT NULL,
        sender_handle TEXT NOT NULL,
        sender_display_name TEXT,
        sent_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        UNIQUE (device_id, message_id)
    );
    CREATE INDEX messages_expiry ON messages (expires_at);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)
# devices.aors holds the AORs joined by a newline, which no SIP URI contains.
_AOR_SEP = "\n"
_STOP = object()


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema to SCHEMA_VERSION; refuse a newer database."""
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise RuntimeError(
            f"database schema version {version} is newer than this voipgw "
            f"supports ({SCHEMA_VERSION}); upgrade voipgw"
        )
    for target in range(version + 1, SCHEMA_VERSION + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[target - 1].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version={target}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    return SCHEMA_VERSION


def _apply(conn: sqlite3.Connection, op: Op) -> None:
    match op:
        case PutDevice(device=d):
            conn.execute(
                "INSERT OR REPLACE INTO devices VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    d.device_id,
                    _AOR_SEP.join(d.aors),
                    d.voip_token,
                    d.alert_token,
                    d.topic,
                    d.apns_env,
                    d.locale,
                    d.app_version,
                    d.last_seen,
                ),
            )
        case DeleteDevice(device_id=device_id):
            conn.execute("DELETE FROM devices WHERE device_id=?", (device_id,))
            conn.execute("DELETE FROM messages WHERE device_id=?", (device_id,))
        case PutBinding(binding=b):
            # A refresh keeps the binding's rowid, so its place in the load
            # order, as it keeps its place in the registry's index.
            conn.execute(
                "INSERT INTO bindings VALUES (?,?,?,?,?) ON CONFLICT "
                "(aor, provider, prid) DO UPDATE SET param=excluded.param, "
                "expires_at=excluded.expires_at",
                (b.aor, b.provider, b.prid, b.param, b.expires_at),
            )
        case DeleteBinding(key=(aor, provider, prid)):
            conn.execute(
                "DELETE FROM bindings WHERE aor=? AND provider=? AND prid=?",
                (aor, provider, prid),
            )
        case PutMessage(message=m):
            # An upsert, not INSERT OR REPLACE: a message stored again (the
            # same id) keeps its place in the replay order, as in the
            # registry's index; a replace would give it a new seq.
            conn.execute(
                "INSERT INTO messages (device_id, message_id, body, "
                "sender_handle, sender_display_name, sent_at, expires_at) "
                "VALUES (?,?,?,?,?,?,?) ON CONFLICT (device_id, message_id) DO "
                "UPDATE SET body=excluded.body, sender_handle=excluded.sender_handle, "
                "sender_display_name=excluded.sender_display_name, "
                "sent_at=excluded.sent_at, expires_at=excluded.expires_at",
                (
                    m.device_id,
                    m.message_id,
                    m.body,
                    m.sender_handle,
                    m.sender_display_name,
                    m.sent_at,
                    m.expires_at,
                ),
            )
        case DeleteMessage(device_id=device_id, message_id=message_id):
            conn.execute(
                "DELETE FROM messages WHERE device_id=? AND message_id=?",
                (device_id, message_id),
            )
        case PurgeExpired(now=now):
            conn.execute("DELETE FROM bindings WHERE expires_at<=?", (now,))
            conn.execute("DELETE FROM messages WHERE expires_at<=?", (now,))


def _commit(conn: sqlite3.Connection, ops: list[Op]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        for op in ops:
            _apply(conn, op)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class SQLitePersister:
    """The default persister. ``threaded=False`` commits inline (tests)."""

    log = Logger()
    max_batch = 512

    def __init__(
        self, path: Path, reactor: IReactorFromThreads, *, threaded: bool = True
    ) -> None:
        self.path = path
        self._reactor = reactor
        self._threaded = threaded
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = _connect(path)
        migrate(self._conn)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed: Deferred[None] | None = None

    def load(self) -> Snapshot:
        """Everything, in the order the registry's index held it: a device
        put again moves to the end (a new rowid, as in the index); a binding
        or message stored again keeps its place (an upsert). Ring order and
        message replay order thus survive a restart."""
        conn = self._conn
        devices = [
            Device(
                row[0],
                tuple(row[1].split(_AOR_SEP)) if row[1] else (),
                *row[2:],
            )
            for row in conn.execute(
                "SELECT device_id, aors, voip_token, alert_token, topic, apns_env, "
                "locale, app_version, last_seen FROM devices ORDER BY rowid"
            )
        ]
        bindings = [
            Binding(*row)
            for row in conn.execute(
                "SELECT aor, provider, prid, param, expires_at FROM bindings "
                "ORDER BY rowid"
            )
        ]
        messages = [
            PendingMessage(
                message_id=row[0],
                device_id=row[1],
                body=row[2],
                sender_handle=row[3],
                sender_display_name=row[4],
                sent_at=row[5],
                expires_at=row[6],
            )
            for row in conn.execute(
                "SELECT message_id, device_id, body, sender_handle, "
                "sender_display_name, sent_at, expires_at FROM messages ORDER BY seq"
            )
        ]
        return Snapshot(devices=devices, bindings=bindings, messages=messages)

    def submit(self, ops: list[Op]) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if self._closed is not None:
            d.errback(RuntimeError("store is closed"))
            return d
        if not self._threaded:
            try:
                _commit(self._conn, ops)
            except sqlite3.Error as e:
                d.errback(e)
            else:
                d.callback(None)
            return d
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="voipgw-store", daemon=True
            )
            self._thread.start()
        self._queue.put((ops, d))
        return d

    def close(self) -> Deferred[None]:
        if self._closed is not None:
            return self._closed
        self._closed = Deferred()
        if self._thread is None:
            self._conn.close()
            self._closed.callback(None)
        else:
            self._queue.put(_STOP)
        return self._closed

    # -- writer thread --------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch = [self._queue.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if _STOP in batch:
                stopping = True
                batch = [item for item in batch if item is not _STOP]
            if batch:
                self._write(batch)
        self._conn.close()
        closed = self._closed
        assert closed is not None
        self._reactor.callFromThread(closed.callback, None)

    def _write(self, batch: list[tuple[list[Op], Deferred[None]]]) -> None:
        results: list[tuple[Deferred[None], BaseException | None]] = []
        try:
            _commit(self._conn, [op for ops, _ in batch for op in ops])
            results = [(d, None) for _, d in batch]
        except sqlite3.Error:
            # Find the culprit: commit each submission on its own.
            for ops, d in batch:
                try:
                    _commit(self._conn, ops)
                except Exception as e:  # noqa: BLE001 - each caller hears of its own
                    results.append((d, e))
                else:
                    results.append((d, None))
        self._reactor.callFromThread(_fire, results, self.log.error)


def _fire(
    results: list[tuple[Deferred[None], BaseException | None]],
    report: Callable[..., None],
) -> None:
    for d, error in results:
        if error is None:
            d.callback(None)
        else:
            report("Store write failed: {error}", error=str(error))
            d.errback(error)
