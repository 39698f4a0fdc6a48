"""LPP/1 framing: a 4-byte big-endian length, then one UTF-8 JSON object.

Sans-IO (no Twisted): bytes in, ``Frame`` values out, and back. Size limits are
enforced here so that no caller can forget them: an oversized length prefix is
refused on the header alone and its body is never buffered (``localpush.md``,
"Transport").
"""

from __future__ import annotations

import functools
import json
import math
import re
import struct
import time
from collections.abc import Mapping
from typing import Any

import attrs

__all__ = [
    "HEADER_SIZE",
    "Frame",
    "FrameDecoder",
    "LocalProtocolError",
    "LocalPushError",
    "RemoteProtocolError",
    "encode_frame",
    "encode_ping",
    "encode_pong",
    "format_time",
    "simple_frame",
]

HEADER_SIZE = 4
_HEADER = struct.Struct(">I")


class LocalPushError(Exception):
    """Base class of every error the local-push core raises."""


class RemoteProtocolError(LocalPushError):
    """The peer broke LPP/1; ``code`` is the ``error`` frame code to answer with.

    ``frames`` holds the frames that were decoded from the same input before the
    fault, so that a caller can still act on them (e.g. an ``ack`` followed by
    garbage in one TCP segment).
    """

    def __init__(self, code: str, message: str, frames: tuple[Frame, ...] = ()) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.frames = frames


class LocalProtocolError(LocalPushError):
    """We misused the API, e.g. tried to encode a frame over ``max_frame``."""


@attrs.frozen
class Frame:
    """One decoded frame: its ``type`` and the whole JSON object (read-only use)."""

    type: str
    body: Mapping[str, Any] = attrs.field(eq=True, repr=False)

    def get(self, name: str) -> Any:
        """Member ``name`` of the object, or None when absent."""
        return self.body.get(name)


def _reject_constant(name: str) -> Any:
    # NaN/Infinity are Python extensions, not JSON.
    raise ValueError(f"invalid JSON constant {name}")


def _has_bad_strings(value: Any) -> bool:
    """True when a string (key or value) holds a lone surrogate from a \\u escape.

    Such strings are not Unicode text; they would blow up later when echoed or
    stored, so they are refused at the door. Iterative: depth is attacker-chosen.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


# One decoder and one encoder for every frame: json.loads/dumps with options
# build a new one per call.
_JSON_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_JSON_ENCODER = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def _decode_body(body: bytes) -> Frame:
    try:
        text = body.decode("utf-8")
        obj = _JSON_DECODER.decode(text)
    except (ValueError, RecursionError):
        # ValueError covers UnicodeDecodeError, JSONDecodeError and ints over
        # the interpreter's digit limit; RecursionError deeply nested arrays.
        raise RemoteProtocolError("bad_frame", "frame is not UTF-8 JSON") from None
    if not isinstance(obj, dict):
        raise RemoteProtocolError("bad_frame", "frame is not a JSON object")
    frame_type = obj.get("type")
    if not isinstance(frame_type, str):
        raise RemoteProtocolError("bad_frame", "frame has no string member type")
    if _has_bad_strings(obj):
        raise RemoteProtocolError("bad_frame", "frame is not valid Unicode")
    return Frame(type=frame_type, body=obj)


class FrameDecoder:
    """Incremental decoder; after the first error it refuses all further input."""

    def __init__(self, max_frame: int) -> None:
        if max_frame < 1:
            raise LocalProtocolError("max_frame must be at least 1")
        self._max_frame = max_frame
        self._buffer = bytearray()
        self._error: RemoteProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete frame (never more than 4 + max_frame)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Frame]:
        """Add bytes; return every frame now complete, or raise on a fault."""
        if self._error is not None:
            raise RemoteProtocolError(self._error.code, self._error.message)
        self._buffer += data
        frames: list[Frame] = []
        try:
            while len(self._buffer) >= HEADER_SIZE:
                (length,) = _HEADER.unpack_from(self._buffer)
                if length > self._max_frame:
                    raise RemoteProtocolError(
                        "frame_too_large",
                        f"frame length {length} exceeds max_frame {self._max_frame}",
                    )
                if length == 0:
                    raise RemoteProtocolError("bad_frame", "empty frame")
                end = HEADER_SIZE + length
                if len(self._buffer) < end:
                    break
                body = bytes(self._buffer[HEADER_SIZE:end])
                del self._buffer[:end]
                frames.append(_decode_body(body))
        except RemoteProtocolError as e:
            self._buffer.clear()
            self._error = RemoteProtocolError(e.code, e.message, tuple(frames))
            raise self._error from None
        return frames


def encode_frame(obj: Mapping[str, Any], max_frame: int) -> bytes:
    """Serialise one frame; raise LocalProtocolError if it cannot go on the wire."""
    if not isinstance(obj.get("type"), str):
        raise LocalProtocolError("frame needs a string member type")
    try:
        body = _JSON_ENCODER.encode(obj).encode("utf-8")
    except (TypeError, ValueError) as e:
        # UnicodeEncodeError (lone surrogate) is a ValueError.
        raise LocalProtocolError(f"frame is not serialisable: {e}") from None
    if len(body) > max_frame:
        raise LocalProtocolError(
            f"frame of {len(body)} bytes exceeds max_frame {max_frame}"
        )
    return _HEADER.pack(len(body)) + body


# The frames every session sends most, as clients write them: ping, pong and
# ack, ``{"type":"<type>","id":"<id>"}`` in either member order, JSON whitespace
# allowed, with an id of at most 256 printable ASCII characters other than
# ``"`` and ``\``, which JSON takes verbatim (no escape to undo, nothing for
# ``_has_bad_strings`` to find) and ``encode_frame`` writes back verbatim.
# Everything else takes the full decode.
_WS = rb"[ \t\n\r]*"
_TYPE = rb'"type"' + _WS + rb":" + _WS + rb'"(ping|pong|ack)"'
_ID = rb'"id"' + _WS + rb":" + _WS + rb'"([\x20\x21\x23-\x5b\x5d-\x7e]{0,256})"'
_SIMPLE_RE = re.compile(
    rb"\{" + _WS + _TYPE + _WS + rb"," + _WS + _ID + _WS + rb"\}"
    + rb"|\{" + _WS + _ID + _WS + rb"," + _WS + _TYPE + _WS + rb"\}"
)  # fmt: skip
_PING_HEAD = b'{"type":"ping","id":"'
_PONG_HEAD = b'{"type":"pong","id":"'
_ID_TAIL = b'"}'


def simple_frame(data: bytes, max_frame: int) -> tuple[bytes, bytes] | None:
    """``(type, id)`` when ``data`` is exactly one simple ping, pong or ack.

    A cheap check before the full decode for the frames every session sends
    all the time: None means "decode ``data`` the usual way" (also for every
    malformed input, which the full decode then refuses with its code).
    """
    if len(data) <= HEADER_SIZE:
        return None
    (length,) = _HEADER.unpack_from(data)
    if length != len(data) - HEADER_SIZE or length > max_frame:
        return None
    m = _SIMPLE_RE.fullmatch(data, HEADER_SIZE)
    if m is None:
        return None
    if m[1] is not None:
        return m[1], m[2]
    return m[4], m[3]


def _encode_simple(head: bytes, frame_id: bytes) -> bytes:
    """The frame ``head`` + id + ``"}``, byte for byte what ``encode_frame`` writes."""
    return _HEADER.pack(len(head) + len(frame_id) + 2) + head + frame_id + _ID_TAIL


def encode_pong(ping_id: bytes) -> bytes:
    """``encode_frame({"type": "pong", "id": id})`` for an id from ``simple_frame``.

    Never longer than the ping it answers, so within ``max_frame``.
    """
    return _encode_simple(_PONG_HEAD, ping_id)


def encode_ping(ping_id: bytes) -> bytes:
    """``encode_frame({"type": "ping", "id": id})`` for an id of the simple kind."""
    return _encode_simple(_PING_HEAD, ping_id)


def format_time(t: float) -> str:
    """POSIX seconds -> ISO 8601 UTC with milliseconds and ``Z``, as LPP/1 uses.

    Rounded to the microsecond first, as ``datetime.fromtimestamp`` does, then
    cut to the millisecond. Every call frame carries one or two of these;
    formatting the date once per second instead of per frame saves 3 us each.
    """
    seconds = math.floor(t)
    micros = round((t - seconds) * 1_000_000)  # the subtraction is exact
    if micros == 1_000_000:
        seconds, micros = seconds + 1, 0
    return f"{_second_prefix(seconds)}{micros // 1000:03d}Z"


@functools.lru_cache(maxsize=8)
def _second_prefix(seconds: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS.`` for a whole POSIX second (the few in use:
    now, and the ring deadlines a few seconds on)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(seconds))
