"""The two error families of the SIP layer (STYLE rule 7)."""

from __future__ import annotations

from gateway.sip._raw import RawMessage

__all__ = ["LocalProtocolError", "RemoteProtocolError", "SipParseError"]


class LocalProtocolError(Exception):
    """We misused the SIP layer (a bug on our side, never the peer's)."""


class RemoteProtocolError(Exception):
    """The peer sent something we cannot accept.

    ``status`` is the SIP status a response should carry (400 mostly) and
    ``reason`` a short phrase fit for its reason phrase.
    """

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class SipParseError(RemoteProtocolError):
    """A message that does not follow RFC 3261 syntax.

    ``raw`` holds what could be read of the header section, so that a 400
    can still be built and routed (see ``build_error_response``).
    """

    def __init__(
        self, reason: str, status: int = 400, raw: RawMessage | None = None
    ) -> None:
        super().__init__(reason, status)
        self.raw = raw
