"""Local push (LPP/1): the device socket protocol, its sans-IO core and adapters.

Re-exported here: the sans-IO core (``codec``, ``frames``, ``session``), which
imports nothing from Twisted, so importing this package stays Twisted-free.
The Twisted side is imported from its modules: ``gateway.localpush.hub``
(``Hub``, ``DeviceDirectory``), ``.server`` (``LocalPushFactory``), ``.tls``
(``ServerTLS``), ``.protocol``. The normative wire protocol is
``localpush.md``; choices it leaves open are in ``docs/localpush-notes.md``.
"""

from __future__ import annotations

from gateway.localpush.codec import (
    Frame,
    FrameDecoder,
    LocalProtocolError,
    LocalPushError,
    RemoteProtocolError,
    encode_frame,
)
from gateway.localpush.frames import (
    CallCancelFrame,
    CallFrame,
    FrameSpec,
    Hello,
    MessageFrame,
    Party,
)
from gateway.localpush.session import (
    Acked,
    AckTimedOut,
    CallEventReceived,
    DeviceSession,
    Event,
    HelloAccepted,
    SessionClosed,
    SessionSettings,
)

__all__ = [
    "AckTimedOut",
    "Acked",
    "CallCancelFrame",
    "CallEventReceived",
    "CallFrame",
    "DeviceSession",
    "Event",
    "Frame",
    "FrameDecoder",
    "FrameSpec",
    "Hello",
    "HelloAccepted",
    "LocalProtocolError",
    "LocalPushError",
    "MessageFrame",
    "Party",
    "RemoteProtocolError",
    "SessionClosed",
    "SessionSettings",
    "encode_frame",
]
