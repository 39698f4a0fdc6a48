"""Exceptions raised by the HTTP/2 client.

Every way a request can end badly has its own class so that callers (the APNs
client) can tell "retry elsewhere" from "the server rejected this" without
parsing messages.
"""

from __future__ import annotations

__all__ = [
    "AgentClosedError",
    "ConnectFailedError",
    "ConnectionLostError",
    "GoAwayError",
    "H2ClientError",
    "NegotiationError",
    "ProxyConnectError",
    "QueueFullError",
    "RemoteProtocolError",
    "RequestTimeoutError",
    "ResponseTooLargeError",
    "StreamResetError",
]


class H2ClientError(Exception):
    """Base class of every failure the HTTP/2 agent reports."""


class QueueFullError(H2ClientError):
    """Too many requests already wait for a free stream; shed load, do not wait."""


class AgentClosedError(H2ClientError):
    """The agent was closed (service stop) before the request finished."""


class ConnectFailedError(H2ClientError):
    """No TCP/TLS connection could be made to the server (or the proxy)."""


class NegotiationError(ConnectFailedError):
    """The TLS handshake did not select ALPN ``h2``; HTTP/1.1 is not spoken here."""


class ProxyConnectError(ConnectFailedError):
    """The HTTP CONNECT proxy refused or garbled the tunnel request."""


class ConnectionLostError(H2ClientError):
    """The connection ended while the request was in flight.

    The server may or may not have acted on the request, so it is not retried.
    """


class RemoteProtocolError(H2ClientError):
    """The server broke the HTTP/2 protocol; the connection was closed."""


class StreamResetError(H2ClientError):
    """The server reset the request's stream (RST_STREAM)."""

    def __init__(self, error_code: int, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code


class GoAwayError(H2ClientError):
    """The server sent GOAWAY and the request could not be retried again."""

    def __init__(self, error_code: int, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code


class ResponseTooLargeError(H2ClientError):
    """The response body exceeded the configured maximum size."""


class RequestTimeoutError(H2ClientError):
    """No complete response arrived within the request's timeout."""
