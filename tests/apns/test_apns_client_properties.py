"""Whatever APNs (or the connection to it) does, every push ends once.

Pushes are made, answered with any status and body (or not at all, or with
a body that is cut off or never ends), failed by the transport, cancelled,
and time passes, in any order. The client never has more requests out than
its bound, retries keep their ``apns-id``, nothing is logged as a failure,
and once every deadline has passed every push has exactly one outcome and
nothing is left in flight or queued.
"""

from __future__ import annotations

from typing import Any

from apns_fakes import Harness, Reply, error_body
from hypothesis import event as record
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionLost
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.web.client import ResponseNeverReceived

from gateway.apns import Outcome

MAX_IN_FLIGHT = 3

_REPLIES = st.one_of(
    st.builds(
        lambda n: Reply(
            200, headers={b"apns-id": [b"%08d-0000-0000-0000-000000000000" % n]}
        ),
        st.integers(0, 99),
    ),
    st.builds(
        Reply,
        st.sampled_from((400, 403, 404, 410, 413, 429, 500, 503)),
        st.sampled_from(
            (
                error_body("BadDeviceToken"),
                error_body("Unregistered"),
                error_body("ExpiredProviderToken"),
                error_body("TooManyRequests"),
                b"not json",
                b"x" * 10_000,
                b"",
            )
        ),
        st.sampled_from(({}, {b"retry-after": [b"1"]}, {b"retry-after": [b"junk"]})),
        st.integers(1, 3),
        st.sampled_from(("done", "lost", "never")),
    ),
)
_STEP = st.one_of(
    st.tuples(st.just("push"), st.sampled_from((0.5, 5.0, 30.0))),
    st.tuples(st.just("push"), st.sampled_from((0.5, 5.0, 30.0))),
    st.tuples(st.just("answer"), st.integers(0, 9), _REPLIES),
    st.tuples(st.just("answer"), st.integers(0, 9), _REPLIES),
    st.tuples(
        st.just("fail"),
        st.integers(0, 9),
        st.sampled_from((ConnectionLost(), ResponseNeverReceived([]), ValueError("x"))),
    ),
    st.tuples(st.just("cancel"), st.integers(0, 9)),
    st.tuples(st.just("time"), st.sampled_from((0.2, 1.0, 3.0, 12.0))),
)


def _open(h: Harness) -> list[Any]:
    return [r for r in h.agent.requests if not r.deferred.called and not r.cancelled]


def _apply(h: Harness, pushes: list[Deferred[Outcome]], step: tuple[Any, ...]) -> None:
    kind = step[0]
    if kind == "push":
        pushes.append(h.push(deadline=h.clock.seconds() + step[1]))
    elif kind == "time":
        h.clock.advance(step[1])
    elif kind == "cancel":
        if pushes:
            pushes[step[1] % len(pushes)].cancel()
    elif requests := _open(h):
        request = requests[step[1] % len(requests)]
        if kind == "answer":
            request.answer(step[2])
        else:
            request.deferred.errback(Failure(step[2]))


@settings(max_examples=300)
@given(st.lists(_STEP, max_size=30))
def test_every_push_ends_once(steps: list[tuple[Any, ...]]) -> None:
    h = Harness(max_in_flight=MAX_IN_FLIGHT, max_queued=3, request_timeout_s=2)
    pushes: list[Deferred[Outcome]] = []
    with capturedLogs() as events:
        for step in steps:
            _apply(h, pushes, step)
            assert len(_open(h)) <= MAX_IN_FLIGHT
        h.clock.advance(60)
        h.clock.advance(60)
    assert [e for e in events if "log_failure" in e and not e.get("expected")] == []
    results: list[list[object]] = []
    for d in pushes:
        seen: list[object] = []
        d.addBoth(seen.append)
        results.append(seen)
    for seen in results:
        assert len(seen) == 1
        result = seen[0]
        if isinstance(result, Failure):
            result.trap(CancelledError)  # only a cancelled push fails
        else:
            assert isinstance(result, Outcome)  # a union: any of the classes
            record(type(result).__name__)  # --hypothesis-show-statistics
    assert (h.client.in_flight, h.client.queued) == (0, 0)
    assert _open(h) == []
    ids = {tuple(r.header(b"apns-id") or ()) for r in h.agent.requests}
    assert len(ids) <= len(pushes)  # a retry keeps its push's apns-id
