"""HTTP/2 client for Twisted: an ``IAgent`` that ``treq.HTTPClient`` can use.

APNs only speaks HTTP/2 and Twisted's ``Agent`` only HTTP/1.1; see STYLE.md
rule 16.
"""

from __future__ import annotations

from gateway.http2._agent import H2Agent, H2AgentReactor
from gateway.http2._body import BytesProducer
from gateway.http2._errors import (
    AgentClosedError,
    ConnectFailedError,
    ConnectionLostError,
    GoAwayError,
    H2ClientError,
    NegotiationError,
    ProxyConnectError,
    QueueFullError,
    RemoteProtocolError,
    RequestTimeoutError,
    ResponseTooLargeError,
    StreamResetError,
)
from gateway.http2._response import H2Response

__all__ = [
    "AgentClosedError",
    "BytesProducer",
    "ConnectFailedError",
    "ConnectionLostError",
    "GoAwayError",
    "H2Agent",
    "H2AgentReactor",
    "H2ClientError",
    "H2Response",
    "NegotiationError",
    "ProxyConnectError",
    "QueueFullError",
    "RemoteProtocolError",
    "RequestTimeoutError",
    "ResponseTooLargeError",
    "StreamResetError",
]
