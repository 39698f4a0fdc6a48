"""ClientConnection (sans-IO core) against h2's own server-side state machine.

Bytes go from one side's ``data_to_send`` into the other's ``receive_data``;
no sockets, no reactor.
"""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from h2.errors import ErrorCodes
from h2_fake_servers import GET, make_server

from gateway.http2 import (
    QueueFullError,
    RemoteProtocolError,
    ResponseTooLargeError,
    StreamResetError,
)
from gateway.http2._connection import (
    ClientConnection,
    CloseConnection,
    ConnectionUnusable,
    RequestFailed,
    ResponseComplete,
    ResponseData,
    ResponseHeaders,
    SettingsReceived,
)


def pair(
    max_streams: int | None = None, **kw: int
) -> tuple[ClientConnection[str], h2.connection.H2Connection]:
    """A client and server that have exchanged prefaces (SETTINGS both ways)."""
    client: ClientConnection[str] = ClientConnection(**kw)
    client.initiate()
    server = make_server(max_streams)
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())  # SETTINGS ACK
    return client, server


def to_server(
    client: ClientConnection[str], server: h2.connection.H2Connection
) -> list[h2.events.Event]:
    return server.receive_data(client.data_to_send())


def to_client(
    client: ClientConnection[str], server: h2.connection.H2Connection
) -> list[object]:
    return list(client.receive_data(server.data_to_send()))


def requests(events: list[h2.events.Event]) -> list[int]:
    return [e.stream_id for e in events if isinstance(e, h2.events.RequestReceived)]


def respond(
    server: h2.connection.H2Connection, stream_id: int, body: bytes = b"ok"
) -> None:
    server.send_headers(stream_id, [(b":status", b"200")])
    server.send_data(stream_id, body, end_stream=True)


def test_one_stream_until_server_settings() -> None:
    """Before the server's SETTINGS arrive only one stream is opened; the rest wait."""
    client: ClientConnection[str] = ClientConnection()
    client.initiate()
    for key in "abc":
        client.submit(key, GET)
    server = make_server(max_streams=10)
    assert requests(server.receive_data(client.data_to_send())) == [1]
    assert client.active_streams == 1 and client.queued == 2
    events = to_client(client, server)
    assert SettingsReceived(max_concurrent_streams=10) in events
    assert requests(to_server(client, server)) == [3, 5]


def test_stream_limit_from_settings_queues_the_rest() -> None:
    """With MAX_CONCURRENT_STREAMS=2 the third request starts when one ends."""
    client, server = pair(max_streams=2)
    for key in "abc":
        client.submit(key, GET)
    assert requests(to_server(client, server)) == [1, 3]
    respond(server, 1)
    events = to_client(client, server)
    assert ResponseComplete(key="a") in events
    assert requests(to_server(client, server)) == [5]


def test_request_body_waits_for_window_update() -> None:
    """A body larger than the peer's window is sent up to the window, the rest after WINDOW_UPDATE."""
    client, server = pair()
    body = b"z" * 100_000
    client.submit("a", [(b":method", b"POST"), *GET[1:]], body)
    got = b""
    ended = False
    for _ in range(10):
        for event in to_server(client, server):
            if isinstance(event, h2.events.DataReceived):
                got += event.data or b""
                server.acknowledge_received_data(event.flow_controlled_length or 0, 1)
            ended = ended or isinstance(event, h2.events.StreamEnded)
        if ended:
            break
        assert len(got) <= 65535 or ended
        to_client(client, server)  # deliver WINDOW_UPDATEs
    assert got == body and ended


def test_bodies_blocked_on_the_connection_window_resume_in_order() -> None:
    """Bodies that together exceed the connection window wait; each
    WINDOW_UPDATE resumes the waiting ones oldest first, and a request
    cancelled while waiting sends nothing more."""
    client, server = pair()
    post = [(b":method", b"POST"), *GET[1:]]
    for key in "abcde":
        client.submit(key, post, key.encode() * 20_000)
    received: dict[int, int] = {}
    ended: list[int] = []

    def deliver() -> None:
        for event in to_server(client, server):
            if isinstance(event, h2.events.DataReceived):
                received[event.stream_id] = received.get(event.stream_id, 0) + len(
                    event.data or b""
                )
            elif isinstance(event, h2.events.StreamEnded):
                ended.append(event.stream_id)

    deliver()
    assert sum(received.values()) == 65535  # the connection window, no more
    assert received[1] == received[3] == received[5] == 20_000
    client.cancel("e")
    for _ in range(10):
        server.increment_flow_control_window(30_000)
        to_client(client, server)
        deliver()
    assert ended == [1, 3, 5, 7]
    assert received.get(9, 0) < 20_000


def test_goaway_sorts_retryable_streams() -> None:
    """GOAWAY(last=1): stream 1 still completes, streams 3 and 5 fail retryable, then close."""
    client, server = pair()
    for key in "abc":
        client.submit(key, GET)
    to_server(client, server)
    server.close_connection(last_stream_id=1)
    events = to_client(client, server)
    assert isinstance(events[0], ConnectionUnusable)
    failed = {e.key: e.retry for e in events if isinstance(e, RequestFailed)}
    assert failed == {"b": True, "c": True}
    assert not client.usable
    server.state_machine.state = h2.connection.ConnectionState.SERVER_OPEN
    respond(server, 1)
    events = to_client(client, server)
    assert ResponseComplete(key="a") in events
    assert CloseConnection(reason=None) in events


def test_queue_bound() -> None:
    """Past ``max_queued`` waiting requests, submit raises QueueFullError."""
    client: ClientConnection[str] = ClientConnection(max_queued=1)
    client.initiate()
    client.submit("a", GET)  # the one stream allowed before SETTINGS
    client.submit("b", GET)
    with pytest.raises(QueueFullError):
        client.submit("c", GET)


@pytest.mark.parametrize(
    ("code", "retry"),
    [
        (ErrorCodes.REFUSED_STREAM, True),
        (ErrorCodes.INTERNAL_ERROR, False),
        (ErrorCodes.CANCEL, False),
    ],
)
def test_rst_stream(code: ErrorCodes, retry: bool) -> None:
    """RST_STREAM fails that request with StreamResetError; only REFUSED_STREAM is retryable."""
    client, server = pair()
    client.submit("a", GET)
    client.submit("b", GET)
    to_server(client, server)
    server.reset_stream(1, code)
    respond(server, 3)
    events = to_client(client, server)
    (failed,) = [e for e in events if isinstance(e, RequestFailed)]
    assert failed.key == "a" and failed.retry is retry
    assert (
        isinstance(failed.error, StreamResetError) and failed.error.error_code == code
    )
    assert ResponseComplete(key="b") in events


def test_response_too_large_by_content_length() -> None:
    """A Content-Length above the cap fails at once and resets the stream with CANCEL."""
    client, server = pair(max_response_size=10)
    client.submit("a", GET)
    to_server(client, server)
    server.send_headers(1, [(b":status", b"200"), (b"content-length", b"11")])
    (failed,) = to_client(client, server)
    assert isinstance(failed, RequestFailed)
    assert isinstance(failed.error, ResponseTooLargeError)
    resets = [
        e for e in to_server(client, server) if isinstance(e, h2.events.StreamReset)
    ]
    assert [(r.stream_id, r.error_code) for r in resets] == [(1, ErrorCodes.CANCEL)]


@pytest.mark.parametrize(
    "status_fields",
    [[], [(b":status", b"2xx")], [(b":status", b"20")], [(b":status", b"200")] * 2],
    ids=["missing", "not-digits", "two-digits", "twice"],
)
def test_malformed_status_fails_the_request_not_the_connection(
    status_fields: list[tuple[bytes, bytes]],
) -> None:
    """A response without exactly one 3-digit :status is malformed (RFC 9113
    8.3.2): that request fails, not retried, its stream is reset with
    PROTOCOL_ERROR, and the connection carries on."""
    client, server = pair()
    server.config.validate_outbound_headers = False
    server.config.normalize_outbound_headers = False
    client.submit("a", GET)
    to_server(client, server)
    server.send_headers(1, [*status_fields, (b"apns-id", b"x")])
    (failed,) = to_client(client, server)
    assert isinstance(failed, RequestFailed) and failed.key == "a"
    assert isinstance(failed.error, RemoteProtocolError) and not failed.retry
    resets = [
        e for e in to_server(client, server) if isinstance(e, h2.events.StreamReset)
    ]
    assert [(r.stream_id, r.error_code) for r in resets] == [
        (1, ErrorCodes.PROTOCOL_ERROR)
    ]
    client.submit("b", GET)
    respond(server, requests(to_server(client, server))[0])
    assert ResponseComplete(key="b") in to_client(client, server)


def test_response_too_large_by_data() -> None:
    """Body bytes beyond the cap fail the request after the headers were delivered."""
    client, server = pair(max_response_size=10)
    client.submit("a", GET)
    to_server(client, server)
    server.send_headers(1, [(b":status", b"200")])
    server.send_data(1, b"0123456789")
    server.send_data(1, b"!")
    events = to_client(client, server)
    assert isinstance(events[0], ResponseHeaders)
    assert events[1] == ResponseData(key="a", data=b"0123456789")
    assert isinstance(events[2], RequestFailed)
    assert isinstance(events[2].error, ResponseTooLargeError)


def test_cancel_resets_started_and_dequeues_waiting() -> None:
    """cancel() sends RST_STREAM(CANCEL) for a started stream and drops a queued one silently."""
    client, server = pair(max_streams=1)
    client.submit("a", GET)
    client.submit("b", GET)
    to_server(client, server)
    client.cancel("b")
    client.cancel("a")
    events = to_server(client, server)
    assert [
        (e.stream_id, e.error_code)
        for e in events
        if isinstance(e, h2.events.StreamReset)
    ] == [(1, ErrorCodes.CANCEL)]
    assert requests(events) == []
    assert client.in_flight == 0


def test_garbage_instead_of_settings() -> None:
    """Bytes that are not a SETTINGS preface fail everything with RemoteProtocolError."""
    client: ClientConnection[str] = ClientConnection()
    client.initiate()
    client.submit("a", GET)
    client.data_to_send()
    events = client.receive_data(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    assert isinstance(events[0], RequestFailed)
    assert isinstance(events[0].error, RemoteProtocolError)
    assert isinstance(events[-1], CloseConnection)
    assert client.data_to_send()[3] == 0x7  # GOAWAY frame queued


def test_headers_lower_cased_without_connection_fields() -> None:
    """Header names are sent lower-case; host/connection-specific fields are dropped."""
    client, server = pair()
    client.submit(
        "a",
        [
            *GET,
            (b"Host", b"x"),
            (b"Connection", b"close"),
            (b"APNS-Topic", b"com.example.voip"),
        ],
    )
    (received,) = [
        e for e in to_server(client, server) if isinstance(e, h2.events.RequestReceived)
    ]
    names = [name for name, _ in received.headers or []]
    assert (b"apns-topic", b"com.example.voip") in list(received.headers or [])
    assert b"host" not in names and b"connection" not in names


def test_connection_lost_fails_started_and_releases_queued() -> None:
    """On connection loss started requests fail for good, queued ones are retryable."""
    client, _server = pair(max_streams=1)
    client.submit("a", GET)
    client.submit("b", GET)
    events = client.connection_lost("reset by peer")
    assert {(e.key, e.retry) for e in events if isinstance(e, RequestFailed)} == {
        ("a", False),
        ("b", True),
    }


def test_closed_streams_are_forgotten() -> None:
    """Our stream count replaces h2's per-request scan, yet h2 still drops closed streams."""
    client, server = pair(max_streams=50)
    for i in range(2000):
        client.submit(str(i), GET)
    done = 0
    while done < 2000:
        for event in to_server(client, server):
            if isinstance(event, h2.events.RequestReceived):
                respond(server, event.stream_id)
        done += sum(isinstance(e, ResponseComplete) for e in to_client(client, server))
        assert client.active_streams <= 50
        assert len(client._h2.streams) <= 2 * 50 + 129
    assert client.in_flight == 0


def test_bytes_producer_body_is_sent() -> None:
    """BytesProducer writes its bytes at once (what treq's data_to_body_producer needs)."""
    from gateway.http2 import BytesProducer

    chunks: list[bytes] = []

    class Consumer:
        def write(self, data: bytes) -> None:
            chunks.append(data)

    d = BytesProducer(b'{"aps":{}}').startProducing(Consumer())  # type: ignore[arg-type]
    assert d.called and chunks == [b'{"aps":{}}']


def test_stream_ids_used_up_retires_connection() -> None:
    """When stream ids run out, queued requests come back retryable and the connection retires."""
    client, server = pair()
    client.submit("a", GET)
    to_server(client, server)
    client._h2.highest_outbound_stream_id = 2**31 - 1
    client.submit("b", GET)
    events = client.take_events()
    assert isinstance(events[0], ConnectionUnusable)
    assert [(e.key, e.retry) for e in events if isinstance(e, RequestFailed)] == [
        ("b", True)
    ]
    assert not client.usable
    respond(server, 1)
    events = to_client(client, server)
    assert ResponseComplete(key="a") in events
    assert CloseConnection(reason=None) in events


def test_cancelled_queued_request_never_starts() -> None:
    """A request cancelled while queued is skipped when a stream frees up."""
    client, server = pair(max_streams=1)
    for key in "abc":
        client.submit(key, GET)
    to_server(client, server)
    client.cancel("b")
    assert client.queued == 1
    respond(server, 1)
    events = to_client(client, server)
    assert ResponseComplete(key="a") in events
    (received,) = [
        e for e in to_server(client, server) if isinstance(e, h2.events.RequestReceived)
    ]
    respond(server, received.stream_id, b"c")
    assert ResponseData(key="c", data=b"c") in to_client(client, server)
    assert client.in_flight == 0 and client.queued == 0
