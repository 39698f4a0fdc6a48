"""``_GracefulH2Connection.receive_data``'s short path in lockstep with h2's.

Two client connections open the same requests; a stock h2 server (or a hand
built frame) answers; one client reads the answer through the short path,
the other through ``H2Connection.receive_data`` itself. Events, errors, the
bytes each queues in reply, stream states and the HPACK tables must match,
however the bytes are cut.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import pytest
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hyperframe.frame import (
    HeadersFrame,
    PingFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from gateway.http2._connection import _GracefulH2Connection
from tests.http2.test_h2_open_request import _pair, _state, post

Server = h2.connection.H2Connection
Answer = Callable[[Server, list[int]], bytes]


def _setup(
    requests: int, settings: dict[int, int] | None = None
) -> tuple[_GracefulH2Connection, _GracefulH2Connection, Server, list[int]]:
    fast, reference, server = _pair(settings or {})
    ids = []
    for _ in range(requests):
        stream_id = fast.get_next_available_stream_id()
        fast.open_request(stream_id, post(b""), b"")
        reference.open_request(stream_id, post(b""), b"")
        ids.append(stream_id)
    server.receive_data(fast.data_to_send())
    reference.data_to_send()
    server.data_to_send()
    return fast, reference, server, ids


def _describe(value: Any) -> Any:
    """Events as plain data: h2's ``ChangedSetting`` has no equality."""
    if isinstance(value, h2.events.Event | h2.settings.ChangedSetting):
        return (type(value).__name__, _describe(vars(value)))
    if isinstance(value, dict):
        return sorted((k, _describe(v)) for k, v in value.items())
    if isinstance(value, list | tuple):
        return [_describe(v) for v in value]
    return bytes(value) if isinstance(value, memoryview) else value


def _feed(conn: _GracefulH2Connection, pieces: list[bytes], short: bool) -> Any:
    events: list[h2.events.Event] = []
    try:
        for piece in pieces:
            if short:
                events += conn.receive_data(piece)
            else:
                events += h2.connection.H2Connection.receive_data(conn, piece)
    except h2.exceptions.ProtocolError as e:
        return _describe(events), type(e), e.error_code
    return _describe(events), None, None


def _compare(
    fast: _GracefulH2Connection, reference: _GracefulH2Connection, pieces: list[bytes]
) -> Any:
    got = _feed(fast, pieces, short=True)
    want = _feed(reference, pieces, short=False)
    assert got == want
    assert fast.data_to_send() == reference.data_to_send()
    assert _state(fast) == _state(reference)
    assert list(fast.decoder.header_table.dynamic_entries) == list(
        reference.decoder.header_table.dynamic_entries
    )
    return got


def _cuts(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def _ok(server: Server, ids: list[int]) -> bytes:
    for stream_id in ids:
        apns_id = str(uuid.uuid4()).encode()
        server.send_headers(
            stream_id, [(b":status", b"200"), (b"apns-id", apns_id)], end_stream=True
        )
    return server.data_to_send()


def _with_body(server: Server, ids: list[int]) -> bytes:
    for stream_id in ids:
        server.send_headers(stream_id, [(b":status", b"410")])
        server.send_data(stream_id, b'{"reason":"Unregistered"}')
        server.send_headers(stream_id, [(b"x-trailer", b"1")], end_stream=True)
    return server.data_to_send()


def _big_headers(server: Server, ids: list[int]) -> bytes:
    for stream_id in ids:
        server.send_headers(
            stream_id,
            [(b":status", b"200"), (b"x-big", b"v" * 20000)],
            end_stream=True,
        )
    return server.data_to_send()


def _mixed(server: Server, ids: list[int]) -> bytes:
    server.ping(b"12345678")
    server.increment_flow_control_window(1000)
    out = server.data_to_send()
    out += _ok(server, ids[:2])
    server.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: 7})
    out += server.data_to_send() + _ok(server, ids[2:])
    return out


@pytest.mark.parametrize("answer", [_ok, _with_body, _big_headers, _mixed])
@pytest.mark.parametrize("cut", [0, 1, 7, 9, 10, 50, 4096])
def test_same_events_and_state_however_cut(answer: Answer, cut: int) -> None:
    fast, reference, server, ids = _setup(5)
    data = answer(server, ids)
    events, error, _ = _compare(fast, reference, _cuts(data, cut) if cut else [data])
    assert error is None
    ended = [e[1] for e in events if e[0] == "StreamEnded"]
    assert ended == [[("stream_id", i)] for i in ids]


def _raw_headers(stream_id: int, block: bytes, *flags: str, **attrs: int) -> bytes:
    frame = HeadersFrame(stream_id, data=block, flags=flags)
    for name, value in attrs.items():
        setattr(frame, name, value)
    return frame.serialize()


STATUS_200 = b"\x88"  # static table entry 8, indexed


def test_padded_and_priority_headers_go_to_h2() -> None:
    fast, reference, _, ids = _setup(2)
    data = _raw_headers(
        ids[0], STATUS_200, "END_HEADERS", "END_STREAM", "PADDED", pad_length=5
    ) + _raw_headers(
        ids[1],
        STATUS_200,
        "END_HEADERS",
        "END_STREAM",
        "PRIORITY",
        depends_on=0,
        stream_weight=16,
    )
    events, error, _ = _compare(fast, reference, [data])
    assert error is None
    assert [e[0] for e in events].count("ResponseReceived") == 2


def test_unknown_flag_bits_are_ignored_like_h2() -> None:
    fast, reference, _, ids = _setup(1)
    frame = bytearray(_raw_headers(ids[0], STATUS_200, "END_HEADERS", "END_STREAM"))
    frame[4] |= 0x2 | 0x40  # no meaning on HEADERS (RFC 9113 4.1)
    frame[5] |= 0x80  # the reserved bit of the stream id
    events, error, _ = _compare(fast, reference, [bytes(frame)])
    assert error is None and events[0][0] == "ResponseReceived"


def test_headers_after_our_reset_are_answered_like_h2() -> None:
    fast, reference, server, ids = _setup(2)
    for conn in (fast, reference):
        conn.reset_stream(ids[0], ErrorCodes.CANCEL)
    assert fast.data_to_send() == reference.data_to_send()
    events, error, _ = _compare(fast, reference, [_ok(server, ids)])
    assert error is None
    ended = [e[1] for e in events if e[0] == "StreamEnded"]
    assert ended == [[("stream_id", ids[1])]]


@pytest.mark.parametrize(
    "frame",
    [
        _raw_headers(1, b"\xff\xff\xff\xff", "END_HEADERS"),  # index past the table
        _raw_headers(1, b"\x3f\xe1\xff\xff\xff\x0f", "END_HEADERS"),  # table too big
        _raw_headers(1, b"\x08\x03100", "END_HEADERS", "END_STREAM"),  # 1xx ending
        _raw_headers(99, STATUS_200, "END_HEADERS"),  # a stream never opened
        HeadersFrame(1, data=b"\x88" * 20000, flags=["END_HEADERS"]).serialize(),
    ],
    ids=["bad index", "table size", "informational end", "unknown", "long"],
)
def test_bad_frames_fail_the_same_way(frame: bytes) -> None:
    fast, reference, _, _ = _setup(1)
    _, error, _ = _compare(fast, reference, [frame])
    assert error is not None and issubclass(error, h2.exceptions.ProtocolError)


def test_headers_on_an_even_stream_like_h2() -> None:
    """A stream the server may not open (push is off): whatever h2 makes of it."""
    fast, reference, _, _ = _setup(1)
    _compare(fast, reference, [_raw_headers(2, STATUS_200, "END_HEADERS")])


def test_frames_after_a_failure_are_not_read() -> None:
    fast, reference, server, ids = _setup(2)
    bad = _raw_headers(ids[0], b"\xff\xff\xff\xff", "END_HEADERS")
    events, error, _ = _compare(fast, reference, [bad + _ok(server, ids[1:])])
    assert error is not None and events == []


def test_control_frames_only() -> None:
    fast, reference, _, _ = _setup(0)
    data = (
        PingFrame(0, opaque_data=b"abcdefgh").serialize()
        + WindowUpdateFrame(0, window_increment=10).serialize()
        + SettingsFrame(
            0, settings={SettingCodes.INITIAL_WINDOW_SIZE: 1000}
        ).serialize()
    )
    events, error, _ = _compare(fast, reference, _cuts(data, 5))
    assert error is None and len(events) == 3


def test_a_header_block_in_pieces_lets_no_other_headers_in() -> None:
    """HEADERS without END_HEADERS, then another stream's HEADERS: h2 refuses
    it (RFC 9113 6.10), and so must the short path."""
    fast, reference, _, ids = _setup(2)
    data = _raw_headers(ids[0], STATUS_200) + _raw_headers(
        ids[1], STATUS_200, "END_HEADERS", "END_STREAM"
    )
    _, error, _ = _compare(fast, reference, [data])
    assert error is not None and issubclass(error, h2.exceptions.ProtocolError)


def test_a_frame_cut_off_is_finished_before_anything_is_parsed() -> None:
    """The rest of a cut DATA frame holds bytes that look like a HEADERS frame;
    they are the body, not a response."""
    fast, reference, server, ids = _setup(2)
    server.send_headers(ids[0], [(b":status", b"200")])
    inner = _raw_headers(ids[1], STATUS_200, "END_HEADERS", "END_STREAM")
    server.send_data(ids[0], inner, end_stream=True)
    data = server.data_to_send()
    cut = len(data) - len(inner)
    events, error, _ = _compare(fast, reference, [data[:cut], data[cut:]])
    assert error is None
    assert [e[0] for e in events].count("ResponseReceived") == 1
