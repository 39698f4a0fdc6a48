"""Sans-IO framing of SIP over TCP/TLS (RFC 3261 18.3, RFC 5626 3.5.1).

A stream carries messages back to back; each ends after its header section
(CRLFCRLF) plus Content-Length octets. Between messages a peer may send
keep-alives: CRLFCRLF is a ping, answered with one CRLF (the pong); a lone
CRLF is a pong or noise and is dropped. Any framing fault is fatal to the
stream: the framer reports it once and accepts no more data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.sip._errors import LocalProtocolError

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

DEFAULT_MAX_HEADER_BYTES = 16 * 1024
DEFAULT_MAX_CONTENT_LENGTH = 64 * 1024
PONG = b"\r\n"

_CONTENT_LENGTH_RE = re.compile(
    rb"\r\n(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*?)[ \t]*(?=\r\n)", re.IGNORECASE
)
_FOLD_RE = re.compile(rb"\r\n[ \t]+")


@dataclass(frozen=True, slots=True, kw_only=True)
class FramedMessage:
    """One complete message, ready for ``parse_message``."""

    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Ping:
    """An RFC 5626 keep-alive ping; write ``pong`` back on the stream."""

    pong: bytes = PONG


@dataclass(frozen=True, slots=True, kw_only=True)
class FramingError:
    """The stream broke framing; close it. ``reason`` says why, for logs."""

    reason: str


Frame = FramedMessage | Ping | FramingError


class StreamFramer:
    """Cuts a byte stream into SIP messages; one instance per connection."""

    def __init__(
        self,
        *,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        max_content_length: int = DEFAULT_MAX_CONTENT_LENGTH,
    ) -> None:
        self._max_header_bytes = max_header_bytes
        self._max_content_length = max_content_length
        self._buffer = bytearray()
        self._scanned = 0  # bytes of the current head already searched
        self._need: int | None = None  # total length once the head is known
        self._closed = False

    @property
    def closed(self) -> bool:
        """True after a ``FramingError``: the stream must be closed."""
        return self._closed

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete message (for metrics and tests)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Frame]:
        """Add received bytes; return the frames they complete, in order.

        A ``FramingError``, if any, is the last frame; feeding afterwards is
        our bug and raises ``LocalProtocolError``.
        """
        if self._closed:
            raise LocalProtocolError("feed() after a framing error")
        self._buffer += data
        frames: list[Frame] = []
        while True:
            frame = self._next()
            if frame is None:
                return frames
            frames.append(frame)
            if isinstance(frame, FramingError):
                self._closed = True
                self._buffer.clear()
                return frames

    def _next(self) -> Frame | None:
        buf = self._buffer
        if self._need is None:
            while buf.startswith(b"\r\n"):
                if buf.startswith(b"\r\n\r\n"):
                    del buf[:4]
                    return Ping()
                if len(buf) < 4 and b"\r\n\r\n".startswith(bytes(buf)):
                    return None  # maybe the first half of a ping
                del buf[:2]
            if not buf:
                return None
            end = buf.find(b"\r\n\r\n", max(0, self._scanned - 3))
            if end < 0:
                self._scanned = len(buf)
                if len(buf) > self._max_header_bytes:
                    return FramingError(reason="Header section too large")
                return None
            head_len = end + 4
            if head_len > self._max_header_bytes:
                return FramingError(reason="Header section too large")
            length = self._content_length(bytes(buf[:head_len]))
            if isinstance(length, FramingError):
                return length
            self._need = head_len + length
        if len(buf) < self._need:
            return None
        data = bytes(buf[: self._need])
        del buf[: self._need]
        self._need = None
        self._scanned = 0
        return FramedMessage(data=data)

    def _content_length(self, head: bytes) -> int | FramingError:
        if b"\r\n " in head or b"\r\n\t" in head:
            head = _FOLD_RE.sub(b" ", head)
        values = _CONTENT_LENGTH_RE.findall(head)
        if not values:
            return FramingError(reason="Content-Length is required on streams")
        if len(values) > 1:
            return FramingError(reason="More than one Content-Length")
        value = values[0]
        if not value.isdigit() or len(value) > 12:
            return FramingError(reason="Bad Content-Length")
        length = int(value)
        if length > self._max_content_length:
            return FramingError(reason="Content-Length over the limit")
        return length
