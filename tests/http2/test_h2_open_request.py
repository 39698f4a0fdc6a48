"""``_GracefulH2Connection.open_request`` in lockstep with h2's own calls.

Two client connections get the same server preface; one opens each request
with ``open_request``, the other with h2's ``send_headers`` and ``send_data``
(the first chunk the windows allow, as ``ClientConnection`` sent before).
The bytes on the wire and every piece of h2 state a later frame depends on
must come out the same, and a stock h2 server must read the request.
"""

from __future__ import annotations

from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import pytest
from h2.settings import SettingCodes

from gateway.http2._connection import (
    _CONNECTION_WINDOW,
    _GracefulH2Connection,
    h2_config,
)

Header = tuple[bytes, bytes]

POST = [
    (b":method", b"POST"),
    (b":scheme", b"https"),
    (b":authority", b"api.push.apple.com"),
    (b":path", b"/3/device/" + b"ab" * 32),
    (b"apns-push-type", b"voip"),
    (b"apns-topic", b"com.example.app.voip"),
]


def post(body: bytes, *extra: Header) -> list[Header]:
    """The request's headers, with a content-length that matches ``body``."""
    length = [(b"content-length", str(len(body)).encode())] if body else []
    return [*POST, *length, *extra]


def _client() -> _GracefulH2Connection:
    conn = _GracefulH2Connection(h2_config(client_side=True), lambda: 0)
    conn.initiate_connection()
    conn.increment_flow_control_window(_CONNECTION_WINDOW - 65535)
    return conn


def _server(settings: dict[int, int]) -> h2.connection.H2Connection:
    server = h2.connection.H2Connection(config=h2_config(client_side=False))
    server.local_settings = h2.settings.Settings(client=False, initial_values=settings)
    server.initiate_connection()
    return server


def _pair(
    settings: dict[int, int],
) -> tuple[_GracefulH2Connection, _GracefulH2Connection, h2.connection.H2Connection]:
    """Two clients with the same server's preface applied, and the server
    (which has seen the first client's preface and SETTINGS ACK)."""
    server = _server(settings)
    fast, reference = _client(), _client()
    server.receive_data(fast.data_to_send())
    reference.data_to_send()
    preface = server.data_to_send()
    for conn in (fast, reference):
        conn.receive_data(preface)
    server.receive_data(fast.data_to_send())  # SETTINGS ACK
    reference.data_to_send()
    return fast, reference, server


def _reference_body(
    conn: _GracefulH2Connection, stream_id: int, body: bytes, sent: int
) -> int:
    """The body as ``ClientConnection`` sent it through h2 before."""
    while sent < len(body):
        size = min(
            conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size
        )
        if size <= 0:
            break
        chunk = body[sent : sent + size]
        sent += len(chunk)
        conn.send_data(stream_id, chunk, end_stream=sent == len(body))
    return sent


def _reference_open(
    conn: _GracefulH2Connection, stream_id: int, headers: list[Header], body: bytes
) -> int:
    conn.send_headers(stream_id, headers, end_stream=not body)
    return _reference_body(conn, stream_id, body, 0)


def _state(conn: _GracefulH2Connection) -> dict[str, Any]:
    streams = {
        sid: (
            s.state_machine.state,
            s.state_machine.headers_sent,
            s.outbound_flow_control_window,
            s._authority,
            s.request_method,
            s.max_outbound_frame_size,
        )
        for sid, s in conn.streams.items()
    }
    return {
        "state": conn.state_machine.state,
        "highest": conn.highest_outbound_stream_id,
        "window": conn.outbound_flow_control_window,
        "streams": streams,
    }


def _lockstep(
    settings: dict[int, int], requests: list[tuple[list[Header], bytes]]
) -> tuple[_GracefulH2Connection, bytes, list[int]]:
    fast, reference, _ = _pair(settings)
    sent_fast: list[int] = []
    for headers, body in requests:
        stream_id = fast.get_next_available_stream_id()
        assert stream_id == reference.get_next_available_stream_id()
        sent = fast.open_request(stream_id, headers, body)
        assert sent == _reference_open(reference, stream_id, headers, body)
        sent_fast.append(sent)
        wire = fast.data_to_send()
        assert wire == reference.data_to_send()
        assert _state(fast) == _state(reference)
    return fast, wire, sent_fast


def _server_reads(
    settings: dict[int, int], requests: list[tuple[list[Header], bytes]]
) -> list[h2.events.Event]:
    server = _server(settings)
    client = _client()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    events = server.receive_data(client.data_to_send())
    for headers, body in requests:
        client.open_request(client.get_next_available_stream_id(), headers, body)
        events += server.receive_data(client.data_to_send())
    return events


@pytest.mark.parametrize(
    "body",
    [b"", b"x", b'{"aps":{}}' * 34, bytes(range(256)) * 64, b"y" * 70000],
    ids=["none", "one byte", "voip payload", "one frame", "past stream window"],
)
def test_same_bytes_and_state_as_h2(body: bytes) -> None:
    _lockstep({}, [(post(body), body)] * 3)


def test_small_frames_and_windows_split_the_body_the_same_way() -> None:
    settings = {
        SettingCodes.MAX_FRAME_SIZE: 16384,
        SettingCodes.INITIAL_WINDOW_SIZE: 100,
    }
    _, _, sent = _lockstep(settings, [(post(b"z" * 344), b"z" * 344)] * 2)
    assert sent == [100, 100]


def test_body_over_several_frames_and_resumed_after_window_updates() -> None:
    """A body bigger than a frame goes out in frames of the peer's size; what
    the windows hold back goes out, the same way, once they grow."""
    fast, reference, server = _pair({SettingCodes.INITIAL_WINDOW_SIZE: 40000})
    body = bytes(range(256)) * 400  # 102,400 bytes
    sent = fast.open_request(1, post(body), body)
    assert sent == _reference_open(reference, 1, post(body), body) == 40000
    wire = fast.data_to_send()
    assert wire == reference.data_to_send()
    server.receive_data(wire)
    while sent < len(body):
        server.increment_flow_control_window(30000)
        server.increment_flow_control_window(30000, stream_id=1)
        grant = server.data_to_send()
        for conn in (fast, reference):
            conn.receive_data(grant)
        sent_fast = fast.send_body(1, body, sent)
        assert sent_fast == _reference_body(reference, 1, body, sent) > sent
        wire = fast.data_to_send()
        assert wire == reference.data_to_send()
        assert _state(fast) == _state(reference)
        server.receive_data(wire)
        sent = sent_fast
    assert (
        fast.streams[1].state_machine.state == reference.streams[1].state_machine.state
    )


def test_zero_stream_window_sends_headers_only() -> None:
    settings = {SettingCodes.INITIAL_WINDOW_SIZE: 0}
    _, wire, sent = _lockstep(settings, [(post(b"payload"), b"payload")])
    assert sent == [0]
    assert wire[3] == 0x1 and wire[4] == 0x4  # HEADERS, END_HEADERS only


def test_header_block_over_frame_size_uses_continuation() -> None:
    extra = ((b"x-big", b"v" * 20000), (b"x-big-2", b"w" * 20000))
    requests = [(post(b"body", *extra), b"body"), (post(b"", *extra), b"")]
    _, wire, _ = _lockstep({}, requests)
    assert wire[3] == 0x1 and wire[4] == 0x1  # HEADERS, END_STREAM, no END_HEADERS
    events = _server_reads({}, requests)
    got = [e for e in events if isinstance(e, h2.events.RequestReceived)]
    assert [dict(e.headers)[b"x-big"] for e in got] == [b"v" * 20000] * 2


def test_connection_window_is_shared_across_streams() -> None:
    """The connection window (65,535 from the server) caps the second body."""
    settings = {
        SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20,
        SettingCodes.MAX_FRAME_SIZE: 1 << 20,
    }
    body = b"a" * 60000
    _, _, sent = _lockstep(settings, [(post(body), body)] * 2)
    assert sent == [60000, 5535]


def test_a_stock_server_reads_headers_and_body() -> None:
    body = b'{"aps":{"content-available":1}}'
    events = _server_reads({}, [(post(body), body), (post(b""), b"")])
    received = [e for e in events if isinstance(e, h2.events.RequestReceived)]
    assert [e.stream_id for e in received] == [1, 3]
    assert list(received[0].headers) == post(body)
    data = [e for e in events if isinstance(e, h2.events.DataReceived)]
    assert [(e.stream_id, e.data) for e in data] == [(1, body)]
    ended = [e.stream_id for e in events if isinstance(e, h2.events.StreamEnded)]
    assert ended == [1, 3]


def test_stream_limit_raises_before_any_state_changes() -> None:
    fast, _, _ = _pair({SettingCodes.MAX_CONCURRENT_STREAMS: 1})
    fast._open_count = lambda: 1  # one stream already open
    before = _state(fast)
    with pytest.raises(h2.exceptions.TooManyStreamsError):
        fast.open_request(fast.get_next_available_stream_id(), POST, b"x")
    assert _state(fast) == before and fast.data_to_send() == b""


def test_closed_connection_refuses_like_h2() -> None:
    fast, reference, _ = _pair({})
    fast.close_connection()
    reference.close_connection()
    with pytest.raises(h2.exceptions.ProtocolError):
        fast.open_request(1, POST, b"x")
    with pytest.raises(h2.exceptions.ProtocolError):
        reference.send_headers(1, POST)
