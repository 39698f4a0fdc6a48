"""Wire helpers and a fake-socket world shared by the local-push tests (a
plain module, not fixtures)."""

from __future__ import annotations

import itertools
import json
import struct
from collections.abc import Callable
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from zope.interface import alsoProvides

from gateway.devicetoken import mint_device_token
from gateway.localpush.codec import Frame, FrameDecoder
from gateway.localpush.hub import Hub, InMemoryDeviceDirectory
from gateway.localpush.protocol import LocalPushProtocol
from gateway.localpush.server import LocalPushFactory
from gateway.localpush.session import SessionSettings

SECRET = b"integrator-secret-" + b"0123456789abcdef" * 3
T0 = 1_795_428_000.0  # 2026-11-23T10:00:00Z
DEVICE = "3f1c-iphone"
AOR = "sip:bob@example.com"


def wire(obj: dict[str, Any]) -> bytes:
    """One client frame, built without the codec under test."""
    body = json.dumps(obj).encode()
    return struct.pack(">I", len(body)) + body


def token(device_id: str = DEVICE, now: float = T0, **kw: Any) -> str:
    """A valid device JWT."""
    return mint_device_token(SECRET, device_id, AOR, now=now, **kw)


def hello(device_id: str = DEVICE, now: float = T0, **members: Any) -> dict[str, Any]:
    """A valid hello object; ``members`` override or (with None) drop members."""
    obj: dict[str, Any] = {
        "type": "hello",
        "v": 1,
        "device_id": device_id,
        "token": token(device_id, now),
        "voip_token": "AB" * 32,
        "alert_token": "cd" * 32,
        "topic": "com.example.app",
        "apns_env": "production",
        "locale": "de-DE",
        "app_version": "2.4.1",
    }
    for name, value in members.items():
        if value is None:
            obj.pop(name, None)
        else:
            obj[name] = value
    return obj


def frames_of(data: bytes, max_frame: int = 1 << 20) -> list[dict[str, Any]]:
    """Decode server output into plain objects for assertions."""
    out: list[Frame] = FrameDecoder(max_frame).feed(data)
    return [dict(f.body) for f in out]


def counter_ids(prefix: str = "id") -> Callable[[], str]:
    """Predictable ids: id-1, id-2, ..."""
    counter = itertools.count(1)
    return lambda: f"{prefix}-{next(counter)}"


class RecordingListener:
    """A SessionListener that records what it was told."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.infos: list[Any] = []

    def on_session_up(self, device_id: str, info: Any) -> None:
        self.calls.append(("up", device_id))
        self.infos.append(info)

    def on_session_down(self, device_id: str, reason: str) -> None:
        self.calls.append(("down", device_id, reason))

    def on_call_event(self, device_id: str, call_id: str, event: str) -> None:
        self.calls.append(("call_event", device_id, call_id, event))


class Transport(StringTransport):
    """StringTransport that records abortConnection separately."""

    aborted = False
    no_delay: bool | None = None

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.no_delay = enabled


class World:
    """A hub, a factory, a clock and helpers to open fake connections."""

    def __init__(self, **settings: Any) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.directory = InMemoryDeviceDirectory()
        self.hub = Hub(self.clock, self.directory)
        self.listener = RecordingListener()
        self.hub.add_listener(self.listener)
        self.factory = LocalPushFactory(
            settings=SessionSettings(**settings),
            secret=SECRET,
            hub=self.hub,
            clock=self.clock,
            id_factory=counter_ids(),
        )

    def connect(self, *, tls: bool = False) -> tuple[LocalPushProtocol, Transport]:
        proto = self.factory.buildProtocol(IPv4Address("TCP", "192.0.2.7", 50000))
        tr = Transport(peerAddress=IPv4Address("TCP", "192.0.2.7", 50000))
        if tls:
            alsoProvides(tr, ISSLTransport)
        proto.makeConnection(tr)
        return proto, tr

    def device(self, device_id: str = DEVICE) -> tuple[LocalPushProtocol, Transport]:
        """A connection past hello; the transport is cleared of the welcome."""
        proto, tr = self.connect()
        proto.dataReceived(wire(hello(device_id, now=self.clock.seconds())))
        (welcome,) = frames_of(tr.value())
        assert welcome["type"] == "welcome"
        tr.clear()
        return proto, tr


def result_of(d: Deferred[Any]) -> Any:
    """The result of a fired Deferred, leaving it in place."""
    results: list[Any] = []

    def grab(result: Any) -> Any:
        results.append(result)
        return result

    d.addBoth(grab)
    assert results, "Deferred has not fired"
    return results[0]


def not_fired(d: Deferred[Any]) -> bool:
    """True while ``d`` has no result."""
    return not d.called


def out(tr: StringTransport) -> list[dict[str, Any]]:
    frames = frames_of(tr.value())
    tr.clear()
    return frames
