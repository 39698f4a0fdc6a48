"""Whatever the integrator's endpoint answers, and whenever, the webhook
sender keeps its bounds (queue, concurrency, attempts), never posts an
event again once it was answered 2xx or finally refused, and once every
answer is in and the backoffs have run, nothing is left.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.python.failure import Failure

from gateway.api._webhooks import WebhookSender, WebhookSettings

SETTINGS = WebhookSettings(
    url="https://hooks.example.com/voipgw",
    secret=b"s" * 32,
    max_queue=4,
    max_attempts=3,
    backoff_s=1.0,
    backoff_max_s=4.0,
    concurrency=2,
)
_ANSWERS = st.one_of(
    st.sampled_from((200, 204, 301, 400, 404, 408, 410, 429, 500, 503)),
    st.sampled_from((ConnectionError("refused"), TimeoutError("timeout"))),
)
_STEP = st.one_of(
    st.tuples(st.just("emit"), st.sampled_from(("call.ringing", "call.ended", "nope"))),
    st.tuples(st.just("answer"), st.integers(0, 5), _ANSWERS),
    st.tuples(st.just("answer"), st.integers(0, 5), _ANSWERS),
    st.tuples(st.just("time"), st.sampled_from((0.5, 1.0, 5.0))),
)


class Endpoint:
    """The poster: records each POST and answers it when the test says."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, Deferred[int]]] = []
        self.final: set[str] = set()  # events answered 2xx or refused for good

    def post(
        self, url: str, body: bytes, headers: dict[str, str], timeout: float
    ) -> Deferred[int]:
        event_id = json.loads(body)["id"]
        assert event_id not in self.final, "posted again after a final answer"
        d: Deferred[int] = Deferred()
        self.posts.append((event_id, d))
        return d

    def open(self) -> list[tuple[str, Deferred[int]]]:
        return [(e, d) for e, d in self.posts if not d.called]

    def answer(self, n: int, answer: int | BaseException) -> None:
        pending = self.open()
        if not pending:
            return
        event_id, d = pending[n % len(pending)]
        if isinstance(answer, int):
            if 200 <= answer < 300 or (answer < 500 and answer not in (408, 429)):
                self.final.add(event_id)
            d.callback(answer)
        else:
            d.errback(Failure(answer))


def _apply(
    sender: WebhookSender, clock: Clock, endpoint: Endpoint, step: tuple[Any, ...]
) -> None:
    if step[0] == "emit":
        sender.emit(step[1], {"n": 1})
    elif step[0] == "answer":
        endpoint.answer(step[1], step[2])
    else:
        clock.advance(step[1])


@settings(max_examples=300)
@given(st.lists(_STEP, max_size=40))
def test_webhooks_keep_their_bounds_and_finish(steps: list[tuple[Any, ...]]) -> None:
    clock, endpoint = Clock(), Endpoint()
    sender = WebhookSender(clock, SETTINGS, poster=endpoint.post)
    with capturedLogs() as events:
        for step in steps:
            _apply(sender, clock, endpoint, step)
            assert len(endpoint.open()) <= SETTINGS.concurrency
            assert sender.depth <= SETTINGS.max_queue
        for _ in range(20):  # every answer comes, the backoffs run out
            while endpoint.open():
                endpoint.answer(0, 200)
            clock.advance(5)
    assert [e for e in events if "log_failure" in e] == []
    attempts = Counter(event_id for event_id, _ in endpoint.posts)
    assert all(n <= SETTINGS.max_attempts for n in attempts.values())
    assert sender.depth == 0
    assert clock.getDelayedCalls() == []
