"""A SIP front over the real transaction layer and application, for tests.

Bytes in through ``SipServer.receive``, responses captured at the UDP send,
devices and APNs faked (gw_fakes), time on ``task.Clock``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from gw_fakes import FakeApns, FakeHub
from twisted.internet.task import Clock

from gateway.calls.dispatcher import Dispatcher, DispatcherSettings
from gateway.messages import Messenger
from gateway.sip import (
    Response,
    TimerSettings,
    TransactionLayer,
    Transport,
    parse_message,
)
from gateway.sipserver.application import SipApplication, SipSettings
from gateway.sipserver.server import SipServer
from gateway.store import Device, MemoryPersister, Registry

AOR = "sip:bob@example.com"
PEER = ("127.0.0.1", 5070)


class CaptureUdp:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))


@attrs.define
class Front:
    clock: Clock
    registry: Registry
    hub: Any  # FakeHub, or a real Hub
    apns: FakeApns
    dispatcher: Dispatcher
    app: SipApplication
    server: SipServer
    udp: CaptureUdp
    seen: int = 0

    def send(self, data: bytes, source: tuple[str, int] = PEER) -> None:
        self.server.receive(data, Transport.UDP, source)

    def responses(self) -> list[Response]:
        """Responses sent since the last call."""
        new = self.udp.sent[self.seen :]
        self.seen = len(self.udp.sent)
        out = []
        for data, _ in new:
            message = parse_message(data)
            assert isinstance(message, Response)
            out.append(message)
        return out

    def statuses(self) -> list[int]:
        return [r.status for r in self.responses()]


def make_front(hub_for: Callable[[Clock, Registry], Any] | None = None) -> Front:
    """A SIP front over fakes, on a clock at 1000 s; ``hub_for`` builds a real
    hub instead of the fake one (the dispatcher then listens to it)."""
    clock = Clock()
    clock.advance(1000)
    registry = Registry(MemoryPersister(), clock)
    registry.load()
    registry.put_device(Device("phone", (AOR,), "aa" * 32, "bb" * 32, "com.x"))
    hub, apns = (hub_for(clock, registry) if hub_for else FakeHub()), FakeApns()
    dispatcher = Dispatcher(
        clock,
        registry,
        hub,
        apns,
        DispatcherSettings(ring_timeout_s=30, bundle_id="com.x"),
    )
    if hub_for is not None:
        hub.add_listener(dispatcher)
    messenger = Messenger(
        clock, registry, hub, apns, ttl_s=600, ack_timeout_s=3, bundle_id="com.x"
    )
    server = SipServer(clock, TransactionLayer(TimerSettings()), 65_535)
    app = SipApplication(
        clock,
        dispatcher=dispatcher,
        messenger=messenger,
        registry=registry,
        settings=SipSettings(max_message_body_bytes=100, custom_headers_max_bytes=40),
        responder=server,
    )
    udp = CaptureUdp()
    server.app = app
    server.udp = udp  # type: ignore[assignment]
    return Front(clock, registry, hub, apns, dispatcher, app, server, udp)


def request(
    method: str,
    uri: str = AOR,
    *,
    branch: str = "z9hG4bK-1",
    call_id: str = "c1@test",
    cseq: int = 1,
    headers: str = "",
    body: bytes = b"",
    to: str | None = None,
) -> bytes:
    head = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        'From: "Alice" <sip:+4930123@core.example.com>;tag=from1\r\n'
        f"To: {to or f'<{uri}>'}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        f"{headers}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body
