"""Whatever an HTTP/2 server does, the client core ends every request once.

A server (h2's own state machine, so its frames are well formed, plus raw
garbage) answers, resets, trickles data, changes SETTINGS, sends GOAWAY and
PING in any order while the client submits and cancels. Every request that
was not cancelled ends in exactly one ``ResponseComplete`` or
``RequestFailed``, nothing follows its end, ``receive_data`` never raises,
and once the connection is lost nothing is left in flight or queued.
"""

from __future__ import annotations

import contextlib
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes
from h2_fake_servers import GET, make_server
from hypothesis import event as record  # shown by --hypothesis-show-statistics
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.http2 import QueueFullError
from gateway.http2._connection import (
    ClientConnection,
    RequestFailed,
    ResponseComplete,
    ResponseData,
    ResponseHeaders,
)

POST = [(b":method", b"POST"), *GET[1:]]
_STATUS = st.sampled_from((b"200", b"400", b"410", b"429", b"500", b"100", b"abc", b""))
_SETTING = st.sampled_from(
    (
        (h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS, st.integers(0, 4)),
        (h2.settings.SettingCodes.INITIAL_WINDOW_SIZE, st.integers(0, 70_000)),
        (h2.settings.SettingCodes.MAX_FRAME_SIZE, st.integers(16_384, 20_000)),
    )
)

_SUBMIT = st.tuples(st.just("submit"), st.integers(0, 40_000))
_RESPOND = st.tuples(
    st.just("respond"), st.integers(0, 20), st.sampled_from((b"{}", b"x" * 5000))
)
_STEP = st.one_of(
    _SUBMIT,
    _RESPOND,
    _RESPOND,
    st.tuples(st.just("cancel"), st.integers(0, 20)),
    st.tuples(
        st.just("headers"),
        st.integers(0, 20),
        _STATUS,
        st.booleans(),
        st.sampled_from((None, b"0", b"5", b"99999999", b"x")),
    ),
    st.tuples(st.just("data"), st.integers(0, 20), st.integers(0, 3000), st.booleans()),
    st.tuples(
        st.just("reset"),
        st.integers(0, 20),
        st.sampled_from((ErrorCodes.REFUSED_STREAM, ErrorCodes.CANCEL, 0xFF)),
    ),
    st.tuples(
        st.just("settings"), _SETTING.flatmap(lambda s: st.tuples(st.just(s[0]), s[1]))
    ),
    st.tuples(st.just("window"), st.integers(1, 70_000)),
    st.tuples(st.just("goaway"), st.integers(0, 9)),
    st.tuples(st.just("ping")),
    st.tuples(st.just("garbage"), st.binary(min_size=1, max_size=20)),
    st.tuples(st.just("pump")),
)


class Run:
    def __init__(self) -> None:
        self.client: ClientConnection[int] = ClientConnection(
            max_queued=5, max_response_size=4096
        )
        self.client.initiate()
        self.server = make_server()
        self.streams: list[int] = []  # server-side streams seen
        self.submitted: list[int] = []
        self.cancelled: set[int] = set()
        self.ended: dict[int, int] = {}
        self.events: list[Any] = []
        self.lost = False

    def server_side(self, action: Any) -> None:
        """An h2 server call; one the server's own state forbids is skipped."""
        with contextlib.suppress(
            h2.exceptions.ProtocolError, h2.exceptions.FlowControlError, ValueError
        ):
            action()

    def to_client(self, data: bytes) -> None:
        if self.lost or not data:
            return
        for event in self.client.receive_data(data):
            self.note(event)

    def note(self, event: Any) -> None:
        key = getattr(event, "key", None)
        if key is None:
            return
        assert key not in self.ended, f"{event} after the end of {key}"
        assert key not in self.cancelled, f"{event} for cancelled {key}"
        if isinstance(event, ResponseComplete | RequestFailed):
            self.ended[key] = 1
            record(type(event).__name__)
        else:
            assert isinstance(event, ResponseHeaders | ResponseData)

    def pump(self) -> None:
        for _ in range(4):
            out = self.client.data_to_send()
            if out and not self.lost:
                try:
                    for event in self.server.receive_data(out):
                        if isinstance(event, h2.events.RequestReceived):
                            self.streams.append(event.stream_id)
                except h2.exceptions.ProtocolError:
                    pass
            self.to_client(self.server.data_to_send())
            for event in self.client.take_events():
                self.note(event)

    def stream(self, n: int) -> int | None:
        """Mostly a stream the server still has open; now and then any."""
        open_ = [
            sid
            for sid in self.streams
            if sid in self.server.streams and not self.server.streams[sid].closed
        ]
        pool = open_ if open_ and n % 4 else self.streams
        return pool[n % len(pool)] if pool else None

    def apply(self, step: tuple[Any, ...]) -> None:
        kind, server = step[0], self.server
        if kind == "submit":
            key = len(self.submitted)
            try:
                self.client.submit(key, POST, b"x" * step[1])
            except QueueFullError:
                return
            except Exception as e:  # a closed connection says so
                assert not self.client.usable, e
                return
            self.submitted.append(key)
            for event in self.client.take_events():
                self.note(event)
        elif kind == "cancel" and self.submitted:
            key = self.submitted[step[1] % len(self.submitted)]
            if key not in self.ended:
                self.client.cancel(key)
                self.cancelled.add(key)
        elif kind == "headers" and (sid := self.stream(step[1])) is not None:
            # no :status at all is a malformed response too
            headers = [(b":status", step[2])] if step[2] else [(b"x-none", b"1")]
            if step[4] is not None:
                headers.append((b"content-length", step[4]))
            self.server_side(
                lambda: server.send_headers(sid, headers, end_stream=step[3])
            )
        elif kind == "respond" and (sid := self.stream(step[1])) is not None:
            self.server_side(lambda: server.send_headers(sid, [(b":status", b"200")]))
            self.server_side(lambda: server.send_data(sid, step[2], end_stream=True))
        elif kind == "data" and (sid := self.stream(step[1])) is not None:
            self.server_side(
                lambda: server.send_data(sid, b"d" * step[2], end_stream=step[3])
            )
        elif kind == "reset" and (sid := self.stream(step[1])) is not None:
            self.server_side(lambda: server.reset_stream(sid, step[2]))
        elif kind == "settings":
            self.server_side(lambda: server.update_settings(dict([step[1]])))
        elif kind == "window":
            self.server_side(lambda: server.increment_flow_control_window(step[1]))
        elif kind == "goaway":
            last = self.stream(step[1]) or 0
            self.server_side(lambda: server.close_connection(last_stream_id=last))
        elif kind == "ping":
            self.server_side(lambda: server.ping(b"12345678"))
        elif kind == "garbage":
            self.to_client(step[1])
        self.pump()


@settings(max_examples=300)
@given(st.lists(_SUBMIT, min_size=1, max_size=4), st.lists(_STEP, max_size=30))
def test_every_request_ends_once(
    first: list[tuple[Any, ...]], steps: list[tuple[Any, ...]]
) -> None:
    run = Run()
    run.pump()
    for step in [*first, *steps]:
        run.apply(step)
    for event in run.client.connection_lost("test over"):
        run.note(event)
    run.lost = True
    assert set(run.ended) == set(run.submitted) - run.cancelled
    assert (run.client.in_flight, run.client.queued) == (0, 0)
