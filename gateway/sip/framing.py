"""Public face of SIP stream framing (the code lives in ``_framing``)."""

from __future__ import annotations

from gateway.sip._framing import (
    DEFAULT_MAX_CONTENT_LENGTH,
    DEFAULT_MAX_HEADER_BYTES,
    PONG,
    Frame,
    FramedMessage,
    FramingError,
    Ping,
    StreamFramer,
)

__all__ = [
    "DEFAULT_MAX_CONTENT_LENGTH",
    "DEFAULT_MAX_HEADER_BYTES",
    "PONG",
    "Frame",
    "FramedMessage",
    "FramingError",
    "Ping",
    "StreamFramer",
]
