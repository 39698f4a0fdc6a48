"""Sans-IO HTTP/2 client connection: stream bookkeeping over ``h2``.

``h2.connection.H2Connection`` knows frames and stream states; this class adds
what a client needs on top: a stream limit taken from the server's SETTINGS
(one stream until they arrive), a bounded queue of requests waiting for a
stream, request bodies sent within the flow-control window, response size
caps, and GOAWAY sorting (which requests may be retried elsewhere).

It does no I/O and knows no Twisted: callers feed bytes in with
:meth:`ClientConnection.receive_data`, get :data:`ClientEvent` objects back and
write :meth:`ClientConnection.data_to_send` to the wire. Requests are named by
an opaque hashable key chosen by the caller.
"""

from __future__ import annotations

import contextlib
import re
import struct
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.connection import AllowedStreamIDs, ConnectionInputs, _decode_headers
from h2.errors import ErrorCodes
from h2.stream import H2Stream, StreamInputs, StreamState
from h2.utilities import authority_from_headers, extract_method_header
from hyperframe.frame import Frame, GoAwayFrame

from gateway.http2._errors import (
    ConnectionLostError,
    GoAwayError,
    H2ClientError,
    QueueFullError,
    RemoteProtocolError,
    ResponseTooLargeError,
    StreamResetError,
)
from gateway.http2._hpack import FastDecoder, MemoEncoder

__all__ = [
    "ClientConnection",
    "ClientEvent",
    "CloseConnection",
    "ConnectionUnusable",
    "PingAcknowledged",
    "RequestFailed",
    "ResponseComplete",
    "ResponseData",
    "ResponseHeaders",
    "SettingsReceived",
]

K = TypeVar("K", bound=Hashable)

Header = tuple[bytes, bytes]

# RFC 9113 8.2.2: connection-specific fields must not appear in HTTP/2.
CONNECTION_HEADERS = frozenset(
    {
        b"connection",
        b"host",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
        b"te",
    }
)

_STATUS_RE = re.compile(rb"[1-9][0-9][0-9]")

# Our own receive window for the whole connection: big enough that thousands
# of small APNs responses never stall on WINDOW_UPDATE round trips.
_CONNECTION_WINDOW = 16 * 1024 * 1024

# A frame header (RFC 9113 4.1): 24-bit length and 8-bit type as one word,
# then flags and the stream id.
_FRAME_HEAD = struct.Struct(">LBL")
_DATA, _HEADERS, _CONTINUATION = 0x0, 0x1, 0x9
_END_STREAM, _END_HEADERS, _PADDED, _PRIORITY = 0x1, 0x4, 0x8, 0x20
# HEADERS flags read by the short path: END_HEADERS set, PADDED and PRIORITY not.
_HEADERS_CHECKED = _END_HEADERS | _PADDED | _PRIORITY
# Streams a response may arrive on without h2's closed-stream handling.
_AWAITING_RESPONSE = frozenset({StreamState.OPEN, StreamState.HALF_CLOSED_LOCAL})


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseHeaders(Generic[K]):
    """The final (non-1xx) response head for ``key`` arrived."""

    key: K
    status: int
    headers: tuple[Header, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseData(Generic[K]):
    """A chunk of response body for ``key``."""

    key: K
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseComplete(Generic[K]):
    """The response for ``key`` ended cleanly."""

    key: K


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestFailed(Generic[K]):
    """The request ``key`` is over on this connection.

    ``retry`` is true only when the server certainly did not process it
    (queued here, above a GOAWAY's last stream id, or REFUSED_STREAM).
    """

    key: K
    error: H2ClientError
    retry: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class SettingsReceived:
    """The server's SETTINGS arrived; the stream limit may have changed."""

    max_concurrent_streams: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PingAcknowledged:
    """The server answered our PING."""

    opaque_data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionUnusable:
    """No new requests may start here (GOAWAY, stream ids used up)."""

    reason: H2ClientError


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseConnection:
    """The transport should be closed once pending bytes are written."""

    reason: H2ClientError | None


ClientEvent = (
    ResponseHeaders[K]
    | ResponseData[K]
    | ResponseComplete[K]
    | RequestFailed[K]
    | SettingsReceived
    | PingAcknowledged
    | ConnectionUnusable
    | CloseConnection
)


def h2_config(*, client_side: bool) -> h2.config.H2Configuration:
    """h2's settings for our connections (and for the tests' peers)."""
    return h2.config.H2Configuration(
        client_side=client_side,
        header_encoding=None,
        # _clean_headers already lower-cases and strips connection
        # fields; h2's per-header checks cost more than the rest.
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
        # Of a response we read :status (checked in _on_response) and
        # look a few fields up by lower-case name; h2's generic checks
        # of every field (a generator chain per field) buy nothing more.
        validate_inbound_headers=False,
        normalize_inbound_headers=False,
    )


class _GracefulH2Connection(h2.connection.H2Connection):
    """``H2Connection`` adapted to a long-lived, busy client connection.

    GOAWAY: h2 moves to CLOSED on any GOAWAY and then rejects every later
    frame. RFC 9113 6.8 lets streams at or below last_stream_id finish, so the
    state machine is reopened right after the GOAWAY (within the same
    ``receive_data``); :class:`ClientConnection` never starts another stream.

    Header blocks: :class:`MemoEncoder` and :class:`FastDecoder` replace
    hpack's encoder and decoder (see ``gateway.http2._hpack``).

    Frames: :meth:`open_request` and :meth:`send_body` write a request's
    HEADERS and DATA frames, and :meth:`receive_data` reads a response's
    HEADERS frame, themselves, moving h2's state machines and windows as h2
    would.

    Stream counting: h2 scans every stream it knows on each ``send_headers``
    (O(open streams) per request, most of the CPU at 1000 concurrent streams).
    ``ClientConnection`` already counts its open streams, so use that count and
    let h2 scan (and forget closed streams) only once they pile up.
    """

    def __init__(
        self, config: h2.config.H2Configuration, open_streams: Callable[[], int]
    ) -> None:
        super().__init__(config=config)
        self.encoder = MemoEncoder()
        decoder = FastDecoder()
        decoder.max_header_list_size = self.decoder.max_header_list_size
        decoder.max_allowed_table_size = self.decoder.max_allowed_table_size
        self.decoder = decoder
        self._open_count = open_streams

    @property
    def open_outbound_streams(self) -> int:
        """Our own count; h2's scan runs only to purge closed streams."""
        count = self._open_count()
        if len(self.streams) > 2 * count + 128:
            return super().open_outbound_streams
        return count

    def open_request(
        self, stream_id: int, headers: Sequence[Header], body: bytes
    ) -> int:
        """Open ``stream_id`` with a request's HEADERS and as much of ``body``
        as the flow-control windows and frame size allow; the bytes sent.

        The same frames, stream states and windows as ``send_headers`` then
        ``send_data`` (the tests run both in lockstep), written without
        hyperframe objects and without h2's per-header passes, which this
        connection's cleaned, lower-case bytes headers do not need: those
        two calls were a fifth of a push's CPU.
        """
        limit = self.remote_settings.max_concurrent_streams
        if self.open_outbound_streams + 1 > limit:
            raise h2.exceptions.TooManyStreamsError(f"Max outbound streams is {limit}")
        self.state_machine.process_input(ConnectionInputs.SEND_HEADERS)
        stream = self._begin_new_stream(stream_id, AllowedStreamIDs.ODD)
        stream.state_machine.process_input(StreamInputs.SEND_HEADERS)
        stream._authority = authority_from_headers(headers)
        stream.request_method = extract_method_header(headers)
        block = self.encoder.encode(headers)
        frame_size = self.max_outbound_frame_size
        flags = 0
        if not body:
            stream.state_machine.process_input(StreamInputs.SEND_END_STREAM)
            flags = _END_STREAM
        self._data_to_send += _header_frames(block, frame_size, flags, stream_id)
        return self.send_body(stream_id, body, 0) if body else 0

    def send_body(self, stream_id: int, body: bytes, sent: int) -> int:
        """Send ``body[sent:]`` in DATA frames as far as the flow-control
        windows and frame size allow, END_STREAM on the last; the new count
        of bytes sent.

        What a loop of ``local_flow_control_window`` and ``send_data`` calls
        does to h2's state and windows, without a frame object per chunk.
        """
        stream = self._get_stream_by_id(stream_id)
        out: list[bytes] = []
        while sent < len(body):
            size = min(
                stream.outbound_flow_control_window,
                self.outbound_flow_control_window,
                self.max_outbound_frame_size,
            )
            if size <= 0:
                break
            chunk = body[sent : sent + size]
            sent += len(chunk)
            self.state_machine.process_input(ConnectionInputs.SEND_DATA)
            stream.state_machine.process_input(StreamInputs.SEND_DATA)
            flags = 0
            if sent == len(body):
                stream.state_machine.process_input(StreamInputs.SEND_END_STREAM)
                flags = _END_STREAM
            stream.outbound_flow_control_window -= len(chunk)
            self.outbound_flow_control_window -= len(chunk)
            out.append(_FRAME_HEAD.pack(len(chunk) << 8 | _DATA, flags, stream_id))
            out.append(chunk)
        self._data_to_send += b"".join(out)
        return sent

    def receive_data(self, data: bytes) -> list[h2.events.Event]:  # type: ignore[override]
        """h2's ``receive_data``, with a short path for response HEADERS.

        A whole HEADERS frame (END_HEADERS, no padding or priority) on a
        stream awaiting its response is decoded and handed to the stream's
        own ``receive_headers`` here, without hyperframe's frame objects and
        h2's per-frame dispatch, which cost more than the stream's work: one
        such frame is the whole of an APNs answer. Every other frame, a frame
        cut off at the end of ``data``, and everything while h2 holds a partial
        frame or header block go to h2 itself, in order.
        """
        buffer = self.incoming_buffer
        if buffer._data or buffer._headers_buffer:
            return super().receive_data(data)
        events: list[h2.events.Event] = []
        streams = self.streams
        max_size = self.max_inbound_frame_size
        pos, end = 0, len(data)
        while end - pos >= 9:
            word, flags, stream_id = _FRAME_HEAD.unpack_from(data, pos)
            stop = pos + 9 + (word >> 8)
            if stop > end:
                break
            stream = None
            if (
                word & 0xFF == _HEADERS
                and flags & _HEADERS_CHECKED == _END_HEADERS
                and word >> 8 <= max_size
            ):
                stream = streams.get(stream_id & 0x7FFFFFFF)
            if stream is not None and stream.state_machine.state in _AWAITING_RESPONSE:
                block = data[pos + 9 : stop]
                events += self._receive_response(
                    stream, block, bool(flags & _END_STREAM)
                )
            else:
                events += super().receive_data(data[pos:stop])
                if buffer._headers_buffer:  # a header block goes on: h2 reads it
                    return events + super().receive_data(data[stop:])
            pos = stop
        if pos < end:
            events += super().receive_data(data[pos:])
        return events

    def _receive_response(
        self, stream: H2Stream, block: bytes, end_stream: bool
    ) -> list[h2.events.Event]:
        """What ``_receive_headers_frame`` does for a known, open stream."""
        try:
            headers = _decode_headers(self.decoder, block)
            events = self.state_machine.process_input(ConnectionInputs.RECV_HEADERS)
            frames, stream_events = stream.receive_headers(
                headers, end_stream, self.config.header_encoding
            )
        except h2.exceptions.ProtocolError as e:
            self._terminate_connection(e.error_code)
            raise
        self._prepare_for_sending(frames)
        return events + stream_events

    def _receive_goaway_frame(
        self, frame: GoAwayFrame
    ) -> tuple[list[Frame], list[h2.events.Event]]:
        frames, events = super()._receive_goaway_frame(frame)
        self.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN
        return frames, events


@dataclass(slots=True, kw_only=True)
class _Request(Generic[K]):
    """A request waiting for, or owning, a stream."""

    key: K
    headers: Sequence[Header]
    body: bytes
    stream_id: int = 0
    sent: int = 0  # body bytes handed to h2 so far
    received: int = 0  # response body bytes so far
    responded: bool = False
    cancelled: bool = False


class ClientConnection(Generic[K]):
    """One HTTP/2 client connection's state, as bytes in and events out."""

    def __init__(
        self,
        *,
        max_concurrent_streams: int = 1000,
        max_queued: int = 10000,
        max_response_size: int = 1024 * 1024,
    ) -> None:
        self._max_streams_cap = max_concurrent_streams
        self._max_queued = max_queued
        self._max_response_size = max_response_size
        self._queue: deque[_Request[K]] = deque()
        # Cancelled requests stay in the deque (removal is O(n)) and are skipped.
        self._queue_cancelled = 0
        self._by_key: dict[K, _Request[K]] = {}
        self._by_stream: dict[int, _Request[K]] = {}
        # Started requests whose body waits for flow-control window, in order.
        self._blocked: dict[int, _Request[K]] = {}
        # Events produced outside receive_data (by submit/cancel).
        self._later: list[ClientEvent[K]] = []
        self._h2 = _GracefulH2Connection(
            open_streams=self._by_stream.__len__,
            config=h2_config(client_side=True),
        )
        # One stream until the server's SETTINGS arrive (RFC 9113 3.4 leaves
        # its limit unknown till then); kept here, not read from h2 per request.
        self._stream_limit = 1
        self._usable = True
        self._closed = False
        self._goaway_last_stream: int | None = None
        # Bytes of the server preface seen so far, until its frame header is checked.
        self._preface: bytes | None = b""

    # -- state -----------------------------------------------------------

    @property
    def active_streams(self) -> int:
        """Streams we opened that have not ended yet."""
        return len(self._by_stream)

    @property
    def queued(self) -> int:
        """Requests waiting here for a free stream."""
        return len(self._queue) - self._queue_cancelled

    @property
    def in_flight(self) -> int:
        """All requests this connection is responsible for."""
        return len(self._by_key)

    @property
    def usable(self) -> bool:
        """Whether new requests may be submitted."""
        return self._usable and not self._closed

    @property
    def stream_limit(self) -> int:
        """How many streams may be open now: one until the server's SETTINGS."""
        return self._stream_limit

    # -- actions ---------------------------------------------------------

    def initiate(self) -> None:
        """Queue the connection preface with our settings (sent first)."""
        self._h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 64 * 1024,
            },
        )
        self._h2.initiate_connection()
        self._h2.increment_flow_control_window(_CONNECTION_WINDOW - 65535)

    def submit(
        self,
        key: K,
        headers: Sequence[Header],
        body: bytes = b"",
        *,
        clean: bool = False,
    ) -> None:
        """Start ``key`` on a stream now, or queue it until one is free.

        Header names are lower-cased, pseudo-header fields put first and
        connection-specific fields dropped (RFC 9113 8.2), unless ``clean``
        says the caller built them so (the agent does, in the one pass it
        makes over them anyway).

        Raises :class:`QueueFullError` when the queue is at its bound and
        :class:`ConnectionLostError` when the connection takes no new requests.
        """
        if not self.usable:
            raise ConnectionLostError("HTTP/2 connection no longer accepts requests")
        if key in self._by_key:
            raise ValueError(f"request {key!r} already submitted")
        if self.queued >= self._max_queued and (
            self.queued or self.active_streams >= self.stream_limit
        ):
            raise QueueFullError(
                f"{self._max_queued} requests already wait for an HTTP/2 stream"
            )
        request = _Request(
            key=key,
            headers=headers if clean else _clean_headers(headers),
            body=body,
        )
        self._by_key[key] = request
        self._queue.append(request)
        self._start_queued()

    def cancel(self, key: K) -> None:
        """Forget ``key``: dequeue it or reset its stream with CANCEL."""
        request = self._by_key.pop(key, None)
        if request is None:
            return
        if request.stream_id == 0:
            request.cancelled = True
            self._queue_cancelled += 1
            return
        del self._by_stream[request.stream_id]
        if not self._closed:
            self._reset_quietly(request.stream_id, ErrorCodes.CANCEL)
        self._start_queued()

    def ping(self, opaque_data: bytes) -> None:
        """Queue a PING (keep-alive probe); 8 bytes of opaque data."""
        if not self._closed:
            self._h2.ping(opaque_data)

    def close(self, error_code: int = ErrorCodes.NO_ERROR) -> list[ClientEvent[K]]:
        """Send GOAWAY and end every request (not retryable if started)."""
        events: list[ClientEvent[K]] = []
        if not self._closed:
            self._h2.close_connection(error_code)
        self._fail_all(events, ConnectionLostError("HTTP/2 connection closed locally"))
        self._closed = True
        events.append(CloseConnection(reason=None))
        return events

    def connection_lost(self, reason: str) -> list[ClientEvent[K]]:
        """The transport is gone: fail what is in flight, release the queue."""
        events: list[ClientEvent[K]] = []
        self._fail_all(events, ConnectionLostError(f"HTTP/2 connection lost: {reason}"))
        self._closed = True
        self._usable = False
        return events

    def data_to_send(self) -> bytes:
        """Bytes to write to the transport now."""
        return self._h2.data_to_send()

    def take_events(self) -> list[ClientEvent[K]]:
        """Events caused by ``submit``/``cancel`` (rare: stream ids ran out)."""
        events, self._later = self._later, []
        return events

    def receive_data(self, data: bytes) -> list[ClientEvent[K]]:
        """Feed bytes from the server; return what happened."""
        out = self.take_events()
        if self._closed:
            return out
        try:
            self._check_preface(data)
            h2_events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            # h2 has already queued a GOAWAY for the server.
            error = RemoteProtocolError(f"server broke HTTP/2: {e}")
            self._fail_all(out, error)
            self._closed = True
            self._usable = False
            out.append(CloseConnection(reason=error))
            return out
        for event in h2_events:
            self._handle(event, out)
        self._start_queued()
        out.extend(self.take_events())
        self._maybe_finish_goaway(out)
        return out

    # -- internals -------------------------------------------------------

    def _check_preface(self, data: bytes) -> None:
        """Insist the server starts with a SETTINGS frame (RFC 9113 3.4).

        h2 waits for a whole frame before checking its length, so a server
        speaking something else (HTTP/1.1, garbage) would otherwise make us
        buffer up to 16 MiB before failing.
        """
        if self._preface is None:
            return
        self._preface += data
        if len(self._preface) < 9:
            return
        head, self._preface = self._preface[:9], None
        length = int.from_bytes(head[0:3], "big")
        stream_id = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
        if head[3] != 0x4 or stream_id != 0 or length % 6 or length > 16384:
            self._h2.close_connection(ErrorCodes.PROTOCOL_ERROR)
            raise h2.exceptions.ProtocolError(
                f"server preface is not a SETTINGS frame: {head!r}"
            )

    def _handle(self, event: h2.events.Event, out: list[ClientEvent[K]]) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            self._on_response(event, out)
        elif isinstance(event, h2.events.DataReceived):
            self._on_data(event, out)
        elif isinstance(event, h2.events.StreamEnded):
            request = self._by_stream.pop(event.stream_id, None)
            if request is not None:
                del self._by_key[request.key]
                if not request.responded:
                    out.append(
                        RequestFailed(
                            key=request.key,
                            error=RemoteProtocolError("stream ended without response"),
                            retry=False,
                        )
                    )
                else:
                    out.append(ResponseComplete(key=request.key))
                if request.sent < len(request.body):
                    # Server answered before reading the whole body: stop sending.
                    self._reset_quietly(request.stream_id, ErrorCodes.NO_ERROR)
        elif isinstance(event, h2.events.StreamReset):
            self._on_reset(event, out)
        elif isinstance(event, h2.events.WindowUpdated):
            self._send_bodies()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            remote = self._h2.remote_settings.max_concurrent_streams
            self._stream_limit = max(0, min(remote, self._max_streams_cap))
            out.append(SettingsReceived(max_concurrent_streams=self._stream_limit))
            self._send_bodies()
        elif isinstance(event, h2.events.PingAckReceived):
            out.append(PingAcknowledged(opaque_data=bytes(event.ping_data or b"")))
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._on_goaway(event, out)
        # Trailers, 1xx, priority, settings ACK, unknown frames: nothing to do.

    def _on_response(
        self, event: h2.events.ResponseReceived, out: list[ClientEvent[K]]
    ) -> None:
        request = self._by_stream.get(event.stream_id)
        if request is None:
            return
        statuses: list[bytes] = []
        headers: list[Header] = []
        for name, value in event.headers or ():
            name_b, value_b = bytes(name), bytes(value)
            if name_b == b":status":
                statuses.append(value_b)
            elif not name_b.startswith(b":"):
                headers.append((name_b, value_b))
        if len(statuses) != 1 or not _STATUS_RE.fullmatch(statuses[0]):
            # RFC 9113 8.3.2: exactly one :status, three digits; else malformed.
            error = RemoteProtocolError(f"malformed response :status {statuses!r}")
            self._abort(request, out, error, ErrorCodes.PROTOCOL_ERROR)
            return
        status = int(statuses[0])
        length = _content_length(headers)
        if length is not None and length > self._max_response_size:
            self._abort(request, out, self._too_large())
            return
        request.responded = True
        out.append(
            ResponseHeaders(key=request.key, status=status, headers=tuple(headers))
        )

    def _on_data(
        self, event: h2.events.DataReceived, out: list[ClientEvent[K]]
    ) -> None:
        # Hand the window back at once: bodies are capped, so memory is bounded
        # by max_response_size per stream, not by flow control.
        self._h2.acknowledge_received_data(
            event.flow_controlled_length or 0, event.stream_id
        )
        request = self._by_stream.get(event.stream_id)
        if request is None:
            return
        data = event.data or b""
        request.received += len(data)
        if request.received > self._max_response_size:
            self._abort(request, out, self._too_large())
            return
        if data:
            out.append(ResponseData(key=request.key, data=data))

    def _on_reset(
        self, event: h2.events.StreamReset, out: list[ClientEvent[K]]
    ) -> None:
        request = self._by_stream.pop(event.stream_id, None)
        if request is None:
            return
        del self._by_key[request.key]
        code = int(event.error_code or 0)
        out.append(
            RequestFailed(
                key=request.key,
                error=StreamResetError(
                    code, f"server reset the stream: {_code_name(code)}"
                ),
                # REFUSED_STREAM promises the request was not processed.
                retry=code == ErrorCodes.REFUSED_STREAM and not request.responded,
            )
        )

    def _on_goaway(
        self, event: h2.events.ConnectionTerminated, out: list[ClientEvent[K]]
    ) -> None:
        code = int(event.error_code or 0)
        last = int(event.last_stream_id or 0)
        self._goaway_last_stream = last
        error = GoAwayError(
            code, f"server sent GOAWAY ({_code_name(code)}, last stream {last})"
        )
        self._usable = False
        out.append(ConnectionUnusable(reason=error))
        # Streams the server never saw, and queued requests, may go elsewhere.
        for stream_id in [s for s in self._by_stream if s > last]:
            request = self._by_stream.pop(stream_id)
            del self._by_key[request.key]
            out.append(RequestFailed(key=request.key, error=error, retry=True))
        for request in self._drain_queue():
            out.append(RequestFailed(key=request.key, error=error, retry=True))

    def _maybe_finish_goaway(self, out: list[ClientEvent[K]]) -> None:
        """After GOAWAY, close once the streams at or below last_stream_id end."""
        if (
            self._goaway_last_stream is not None
            and not self._closed
            and not self._by_key
        ):
            self._closed = True
            out.append(CloseConnection(reason=None))

    def _abort(
        self,
        request: _Request[K],
        out: list[ClientEvent[K]],
        error: H2ClientError,
        code: int = ErrorCodes.CANCEL,
    ) -> None:
        self._by_stream.pop(request.stream_id, None)
        self._by_key.pop(request.key, None)
        self._reset_quietly(request.stream_id, code)
        out.append(RequestFailed(key=request.key, error=error, retry=False))

    def _too_large(self) -> ResponseTooLargeError:
        return ResponseTooLargeError(
            f"response body exceeds {self._max_response_size} bytes"
        )

    def _reset_quietly(self, stream_id: int, code: int) -> None:
        with contextlib.suppress(h2.exceptions.NoSuchStreamError):
            self._h2.reset_stream(stream_id, code)

    def _fail_all(self, out: list[ClientEvent[K]], error: H2ClientError) -> None:
        """End every request: queued ones may be retried, started ones not."""
        for request in self._by_stream.values():
            out.append(RequestFailed(key=request.key, error=error, retry=False))
        for request in self._drain_queue():
            out.append(RequestFailed(key=request.key, error=error, retry=True))
        self._by_stream.clear()
        self._by_key.clear()
        self._blocked.clear()

    def _drain_queue(self) -> list[_Request[K]]:
        """Empty the queue; return the requests still waiting (not cancelled)."""
        live = [r for r in self._queue if not r.cancelled]
        self._queue.clear()
        self._queue_cancelled = 0
        for request in live:
            del self._by_key[request.key]
        return live

    def _start_queued(self) -> None:
        """Open streams for queued requests while the limit allows."""
        if not self.usable:
            return
        limit = self.stream_limit
        while self._queue and len(self._by_stream) < limit:
            request = self._queue[0]
            if request.cancelled:
                self._queue.popleft()
                self._queue_cancelled -= 1
                continue
            try:
                stream_id = self._h2.get_next_available_stream_id()
                sent = self._h2.open_request(stream_id, request.headers, request.body)
            except h2.exceptions.NoAvailableStreamIDError:
                # Stream ids used up (2**31): finish what runs, then reconnect.
                self._retire_exhausted()
                return
            except h2.exceptions.TooManyStreamsError:
                return
            self._queue.popleft()
            request.stream_id = stream_id
            request.sent = sent
            self._by_stream[stream_id] = request
            if sent < len(request.body):
                self._blocked[stream_id] = request  # windows full: see _send_body

    def _retire_exhausted(self) -> None:
        error = ConnectionLostError("HTTP/2 stream ids used up on this connection")
        self._usable = False
        self._goaway_last_stream = 2**31
        self._later.append(ConnectionUnusable(reason=error))
        for request in self._drain_queue():
            self._later.append(RequestFailed(key=request.key, error=error, retry=True))
        self._maybe_finish_goaway(self._later)

    def _send_bodies(self) -> None:
        """A window grew: resume the bodies waiting for one, oldest first.

        Only waiting bodies are looked at (with a thousand streams open, a scan
        of all of them per WINDOW_UPDATE was a good part of the CPU), and none
        once the connection's own window is used up again.
        """
        for stream_id, request in list(self._blocked.items()):
            if self._by_stream.get(stream_id) is not request:
                del self._blocked[stream_id]  # ended, reset or cancelled since
                continue
            self._send_body(request)
            if self._h2.outbound_flow_control_window <= 0:
                return

    def _send_body(self, request: _Request[K]) -> None:
        """Send as much body as the windows allow; end the stream when done."""
        request.sent = self._h2.send_body(request.stream_id, request.body, request.sent)
        if request.sent < len(request.body):
            self._blocked[request.stream_id] = request  # resumed on WINDOW_UPDATE
        else:
            self._blocked.pop(request.stream_id, None)


def _header_frames(block: bytes, frame_size: int, flags: int, stream_id: int) -> bytes:
    """A header block as one HEADERS frame or, past ``frame_size``, HEADERS
    then CONTINUATION frames, END_HEADERS on the last (RFC 9113 6.10)."""
    if len(block) <= frame_size:  # nearly always: one frame, no list of chunks
        head = _FRAME_HEAD.pack(
            len(block) << 8 | _HEADERS, flags | _END_HEADERS, stream_id
        )
        return head + block
    chunks = [block[i : i + frame_size] for i in range(0, len(block), frame_size)]
    out: list[bytes] = []
    for i, chunk in enumerate(chunks):
        kind = _HEADERS if i == 0 else _CONTINUATION
        last = _END_HEADERS if i == len(chunks) - 1 else 0
        out.append(_FRAME_HEAD.pack(len(chunk) << 8 | kind, flags | last, stream_id))
        out.append(chunk)
        flags = 0
    return b"".join(out)


def _clean_headers(headers: Sequence[Header]) -> list[Header]:
    """Lower-case names and drop connection-specific fields (RFC 9113 8.2)."""
    pseudo: list[Header] = []
    regular: list[Header] = []
    for name, value in headers:
        lower = name.lower()
        if lower.startswith(b":"):
            pseudo.append((lower, value))
        elif lower not in CONNECTION_HEADERS:
            regular.append((lower, value))
    return pseudo + regular


def _content_length(headers: Sequence[Header]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _code_name(code: int) -> str:
    try:
        return ErrorCodes(code).name
    except ValueError:
        return f"error code {code}"
