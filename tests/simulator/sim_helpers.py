"""Helpers shared by the simulator tests (a plain module, not fixtures)."""

from __future__ import annotations

import json
import random
import struct
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import StringTransport

from gateway.localpush.codec import FrameDecoder
from gateway.simulator import ClientSession, Credentials, SimProtocol

SECRET = b"integrator-secret-" + b"0123456789abcdef" * 3
CREDS = Credentials(device_id="sim-1", token="header.claims.sig", aor="sip:u1@ex.com")


def wire(obj: dict[str, Any]) -> bytes:
    """One server frame, built without the codec."""
    body = json.dumps(obj).encode()
    return struct.pack(">I", len(body)) + body


def welcome(heartbeat_s: int = 30) -> bytes:
    """A welcome frame."""
    return wire(
        {
            "type": "welcome",
            "v": 1,
            "session_id": "s-1",
            "heartbeat_s": heartbeat_s,
            "max_frame": 16384,
            "server_time": "2026-11-23T10:00:00.000Z",
        }
    )


def call(frame_id: str = "f-1", call_id: str = "c-1") -> bytes:
    """A call frame."""
    return wire(
        {
            "type": "call",
            "id": frame_id,
            "call_id": call_id,
            "caller": {"handle": "+4930123", "display_name": "Alice"},
            "video": False,
            "to": "sip:u1@ex.com",
            "expires_at": "2026-11-23T10:01:00.000Z",
        }
    )


def sent(data: bytes) -> list[dict[str, Any]]:
    """Decode client output into plain objects."""
    return [dict(f.body) for f in FrameDecoder(1 << 20).feed(data)]


def open_session(now: float = 0.0, **kw: Any) -> ClientSession:
    """A session past its welcome, output drained."""
    session = ClientSession(CREDS, rng=kw.pop("rng", random.Random(1)), **kw)
    session.start()
    session.receive_data(welcome(), now)
    session.data_to_send()
    return session


class FakeConnector:
    """Connects protocols to StringTransports at once (or refuses, on demand)."""

    def __init__(self) -> None:
        self.protocols: list[SimProtocol] = []
        self.transports: list[StringTransport] = []
        self.refuse = 0

    def __call__(self, proto: SimProtocol) -> Deferred[Any]:
        if self.refuse > 0:
            self.refuse -= 1
            return fail(ConnectionRefusedError())
        transport = StringTransport()
        proto.makeConnection(transport)
        self.protocols.append(proto)
        self.transports.append(transport)
        return succeed(proto)

    @property
    def last(self) -> tuple[SimProtocol, StringTransport]:
        return self.protocols[-1], self.transports[-1]

    def take(self) -> list[dict[str, Any]]:
        """Frames the last connection wrote since the previous take."""
        transport = self.transports[-1]
        data = transport.value()
        transport.clear()
        return sent(data)
