"""ApnsClient against an in-memory IAgent on task.Clock (STYLE rule 19)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import jwt
import pytest
from apns_fakes import (
    PAYLOAD,
    PENDING,
    START,
    TEAM,
    TOKEN,
    FakeAgent,
    Harness,
    Reply,
    error_body,
    failure_of,
    success_of,
)
from treq.client import HTTPClient
from twisted.internet.defer import CancelledError
from twisted.internet.error import ConnectionLost
from twisted.logger import LogEvent, capturedLogs
from twisted.python.failure import Failure
from twisted.web.client import ResponseNeverReceived

from gateway.apns import (
    ApnsSettings,
    Delivered,
    Environment,
    Failed,
    Outcome,
    Overloaded,
    PushType,
    Retryable,
    TokenRejected,
    topic_for,
)


@pytest.fixture(autouse=True)
def log_events() -> Iterator[list[LogEvent]]:
    """Fail any test that leaves an unhandled error or an unexpected failure log."""
    with capturedLogs() as events:
        yield events  # type: ignore[misc]
        gc.collect()
    bad = [e for e in events if "log_failure" in e and not e.get("expected")]
    assert not bad, bad


@pytest.fixture
def h() -> Harness:
    """The default harness: Apple's hosts, default bounds, no jitter spread."""
    return Harness()


def test_request_line_and_headers_field_by_field(h: Harness) -> None:
    """POST /3/device/<token> on api.push.apple.com:443 with calls.md headers."""
    h.agent.script(Reply(200))
    n = h.notification(expiration=START + 5)
    d = h.client.push(n)
    assert success_of(d) == Delivered(n.apns_id)
    (rec,) = h.agent.requests
    assert rec.method == b"POST"
    assert rec.uri == b"https://api.push.apple.com/3/device/" + TOKEN.encode()
    assert rec.body == PAYLOAD
    assert rec.header(b"apns-push-type") == [b"voip"]
    assert rec.header(b"apns-topic") == [b"com.example.phone.voip"]
    assert rec.header(b"apns-priority") == [b"10"]
    assert rec.header(b"apns-expiration") == [str(int(START + 5)).encode()]
    assert rec.header(b"apns-id") == [n.apns_id.encode()]
    assert rec.header(b"apns-collapse-id") is None
    assert rec.header(b"host") is None
    (auth,) = rec.header(b"authorization") or []
    scheme, token = auth.split(b" ")
    assert scheme == b"bearer"
    claims = jwt.decode(
        token,
        h.key.public_key(),
        algorithms=["ES256"],
        options={"verify_iat": False},
    )
    assert claims == {"iss": TEAM, "iat": int(START)}


def test_alert_push_headers(h: Harness) -> None:
    """An alert push carries push type alert and the bare bundle topic."""
    h.agent.script(Reply(200))
    success_of(
        h.push(
            push_type=PushType.ALERT,
            topic=topic_for("com.example.phone", PushType.ALERT),
        )
    )
    (rec,) = h.agent.requests
    assert rec.header(b"apns-push-type") == [b"alert"]
    assert rec.header(b"apns-topic") == [b"com.example.phone"]
    assert rec.header(b"apns-expiration") == [b"0"]


@pytest.mark.parametrize(
    ("settings", "env", "prefix"),
    [
        ({}, Environment.SANDBOX, b"https://api.sandbox.push.apple.com"),
        (
            {"production_host": "127.0.0.1", "production_port": 8443},
            Environment.PRODUCTION,
            b"https://127.0.0.1:8443",
        ),
        (
            {"sandbox_host": "localhost", "sandbox_port": 2197},
            Environment.SANDBOX,
            b"https://localhost:2197",
        ),
    ],
)
def test_endpoint_per_environment_and_override(
    settings: dict[str, object], env: Environment, prefix: bytes
) -> None:
    """Sandbox tokens go to the sandbox host; host and port are overridable."""
    h = Harness(**settings)
    h.agent.script(Reply(200))
    success_of(h.push(environment=env))
    assert h.agent.requests[0].uri == prefix + b"/3/device/" + TOKEN.encode()


@pytest.mark.parametrize(
    ("host", "port"),
    [
        ("api.push.apple.com", 443),
        ("API.Sandbox.Push.Apple.com", 443),
        ("127.0.0.1", 8443),
        ("apns-mock.internal", 2197),
    ],
)
def test_device_url_is_what_treq_makes_of_the_plain_url(host: str, port: int) -> None:
    """The pre-encoded device URL reaches the agent as treq's own encoding of
    ``https://host:port/3/device/<token>`` would (default port dropped, host
    lower-cased)."""
    h = Harness(production_host=host, production_port=port)
    h.agent.script(Reply(200))
    success_of(h.push())
    reference = FakeAgent()
    reference.default = Reply(200)
    HTTPClient(reference).post(f"https://{host}:{port}/3/device/{TOKEN}")
    assert h.agent.requests[0].uri == reference.requests[0].uri


def test_cookies_are_neither_kept_nor_sent(h: Harness) -> None:
    """APNs uses no cookies: a Set-Cookie answer adds no Cookie to later pushes."""
    h.agent.script(
        Reply(200, headers={b"set-cookie": [b"session=1; Path=/"]}), Reply(200)
    )
    success_of(h.push())
    success_of(h.push())
    assert [r.header(b"cookie") for r in h.agent.requests] == [None, None]


def test_delivered_uses_apns_id_from_response(h: Harness) -> None:
    """APNs echoes apns-id; the outcome carries the server's value."""
    echoed = "7b2ef1a4-0000-4000-8000-000000000001"
    h.agent.script(Reply(200, headers={b"apns-id": [echoed.encode()]}))
    assert success_of(h.push()) == Delivered(echoed)
    assert h.client.stats.delivered == 1


def test_delivered_does_not_wait_for_a_200_body(h: Harness) -> None:
    """A 200 is final at once, even if its (empty) body never ends."""
    h.agent.script(Reply(200, end="never"))
    n = h.notification()
    assert success_of(h.client.push(n)) == Delivered(n.apns_id)
    assert h.clock.getDelayedCalls() == []


@pytest.mark.parametrize(
    ("status", "reason"),
    [(410, "Unregistered"), (400, "BadDeviceToken"), (400, "DeviceTokenNotForTopic")],
)
def test_token_rejected_calls_back(h: Harness, status: int, reason: str) -> None:
    """Dead tokens end as TokenRejected and the registry callback gets the token."""
    h.agent.script(Reply(status, error_body(reason)))
    outcome = success_of(h.push())
    assert isinstance(outcome, TokenRejected)
    assert outcome.reason == reason
    assert h.rejected == [(TOKEN, reason)]
    assert len(h.agent.requests) == 1
    assert h.client.stats.token_rejected == 1


def test_failing_token_callback_does_not_hang_the_push(
    log_events: list[LogEvent],
) -> None:
    """A raising on_token_rejected is logged; the push still gets its outcome."""
    h = Harness()

    def boom(token: str, reason: str) -> None:
        raise RuntimeError("registry down")

    h.client._on_token_rejected = boom
    h.agent.script(Reply(410, error_body("Unregistered")))
    assert isinstance(success_of(h.push()), TokenRejected)
    failures = [e for e in log_events if "log_failure" in e]
    assert len(failures) == 1
    assert TOKEN not in str(failures[0].get("token"))
    failures[0]["expected"] = True


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (429, "TooManyRequests"),
        (500, "InternalServerError"),
        (503, "ServiceUnavailable"),
    ],
)
def test_retryable_retried_with_same_apns_id(
    h: Harness, status: int, reason: str
) -> None:
    """429/500/503 are retried after the backoff with the same apns-id."""
    h.agent.script(Reply(status, error_body(reason)), Reply(200))
    n = h.notification()
    d = h.client.push(n)
    assert not d.called
    assert len(h.agent.requests) == 1
    h.clock.advance(0.49)
    assert len(h.agent.requests) == 1
    h.clock.advance(0.01)
    assert success_of(d) == Delivered(n.apns_id)
    first, second = h.agent.requests
    assert first.header(b"apns-id") == second.header(b"apns-id") == [n.apns_id.encode()]
    assert second.at - first.at == pytest.approx(0.5)
    assert h.client.stats.retries == 1


def test_backoff_is_exponential_and_stops_before_the_deadline() -> None:
    """Delays double up to the cap; no attempt is scheduled past the deadline."""
    h = Harness(retry_base_s=1.0, retry_max_s=4.0, max_attempts=100)
    h.agent.default = Reply(503, error_body("ServiceUnavailable"))
    d = h.push(deadline=START + 16)
    h.clock.pump([0.5] * 40)
    times = [r.at - START for r in h.agent.requests]
    assert times == [0, 1, 3, 7, 11, 15]
    assert success_of(d) == Retryable("ServiceUnavailable", status=503)
    assert h.client.stats.retryable == 1
    assert h.clock.getDelayedCalls() == []


def test_jitter_spreads_delays_down_to_half() -> None:
    """With the lowest jitter draw the delay is half the exponential ceiling."""
    h = Harness(jitter=0.0)
    h.agent.script(Reply(503, error_body("ServiceUnavailable")), Reply(200))
    d = h.push()
    h.clock.advance(0.25)
    assert isinstance(success_of(d), Delivered)


def test_each_attempt_gets_its_own_headers() -> None:
    """What one request's wrappers do to its headers does not reach the retry,
    and the retry carries the same fields."""
    h = Harness(jitter=0.0)
    h.agent.script(Reply(503, error_body("ServiceUnavailable")), Reply(200))
    d = h.push()
    first = h.agent.requests[0]
    before = [(k, list(v)) for k, v in first.headers.getAllRawHeaders()]
    first.headers.addRawHeader(b"x-added-by-a-wrapper", b"1")
    first.headers.addRawHeader(b"apns-topic", b"changed")
    h.clock.advance(0.25)
    assert isinstance(success_of(d), Delivered)
    second = h.agent.requests[1]
    assert second.headers is not first.headers
    assert second.header(b"x-added-by-a-wrapper") is None
    assert sorted(second.headers.getAllRawHeaders()) == sorted(before)


def test_max_attempts_caps_retries() -> None:
    """Attempts stop at max_attempts even with time left (STYLE rule 15)."""
    h = Harness(max_attempts=3, retry_base_s=0.1)
    h.agent.default = Reply(500, error_body("InternalServerError"))
    d = h.push()
    h.clock.pump([0.1] * 100)
    assert len(h.agent.requests) == 3
    assert success_of(d) == Retryable("InternalServerError", status=500)


def test_retry_after_is_honoured(h: Harness) -> None:
    """A Retry-After longer than the backoff sets the next attempt's time."""
    h.agent.script(
        Reply(503, error_body("ServiceUnavailable"), headers={b"retry-after": [b"5"]}),
        Reply(200),
    )
    d = h.push()
    h.clock.advance(4.9)
    assert len(h.agent.requests) == 1
    h.clock.advance(0.1)
    assert isinstance(success_of(d), Delivered)


def test_retry_after_past_deadline_ends_now(h: Harness) -> None:
    """A Retry-After beyond the deadline ends the push at once, Retryable."""
    h.agent.script(
        Reply(429, error_body("TooManyRequests"), headers={b"retry-after": [b"60"]})
    )
    assert success_of(h.push()) == Retryable(
        "TooManyRequests", retry_after=60.0, status=429
    )
    assert h.clock.getDelayedCalls() == []


def test_expired_provider_token_mints_new_token_and_retries(h: Harness) -> None:
    """403 ExpiredProviderToken on an old JWT: new JWT, one immediate retry."""
    h.agent.script(Reply(200))
    success_of(h.push())
    h.clock.advance(25 * 60)
    h.agent.script(Reply(403, error_body("ExpiredProviderToken")), Reply(200))
    assert isinstance(success_of(h.push(deadline=h.clock.seconds() + 30)), Delivered)
    _, stale, fresh = h.agent.requests
    assert stale.header(b"authorization") != fresh.header(b"authorization")
    assert stale.header(b"apns-id") == fresh.header(b"apns-id")
    assert fresh.at == stale.at
    assert h.auth.generations == 2
    assert h.client.stats.provider_token_refreshes == 1


def test_expired_provider_token_retried_only_once(h: Harness) -> None:
    """A second ExpiredProviderToken for the same push is final."""
    h.agent.script(Reply(200))
    success_of(h.push())
    h.clock.advance(25 * 60)
    h.agent.default = Reply(403, error_body("ExpiredProviderToken"))
    outcome = success_of(h.push(deadline=h.clock.seconds() + 30))
    assert outcome == Failed(403, "ExpiredProviderToken")
    assert len(h.agent.requests) == 3


def test_expired_provider_token_not_reminted_within_20_minutes(h: Harness) -> None:
    """A young JWT is not replaced (TooManyProviderTokenUpdates); the push fails."""
    h.agent.script(Reply(403, error_body("ExpiredProviderToken")))
    assert success_of(h.push()) == Failed(403, "ExpiredProviderToken")
    assert len(h.agent.requests) == 1
    assert h.auth.generations == 1


@pytest.mark.parametrize(
    ("status", "reason"),
    [(400, "BadTopic"), (403, "InvalidProviderToken"), (413, "PayloadTooLarge")],
)
def test_permanent_failures_not_retried(h: Harness, status: int, reason: str) -> None:
    """Everything else is Failed at once: no retry, no token removal."""
    h.agent.script(Reply(status, error_body(reason)))
    assert success_of(h.push()) == Failed(status, reason)
    assert len(h.agent.requests) == 1
    assert h.rejected == []


def test_timeout_cancels_request_and_retries() -> None:
    """A request unanswered within request_timeout_s is cancelled and retried."""
    h = Harness(request_timeout_s=2.0)
    h.agent.script(PENDING, Reply(200))
    d = h.push()
    h.clock.advance(1.9)
    assert not h.agent.requests[0].cancelled
    h.clock.advance(0.1)
    assert h.agent.requests[0].cancelled
    assert h.client.stats.timeouts == 1
    h.clock.advance(0.5)
    assert isinstance(success_of(d), Delivered)
    assert len(h.agent.requests) == 2


def test_timeout_is_capped_by_the_deadline() -> None:
    """An attempt never outlives the push's deadline: Retryable Timeout at it."""
    h = Harness(request_timeout_s=10.0)
    d = h.push(deadline=START + 1)
    h.clock.advance(1)
    assert success_of(d) == Retryable("Timeout")
    assert h.agent.requests[0].cancelled
    assert h.clock.getDelayedCalls() == []


def test_connection_errors_are_retried(h: Harness) -> None:
    """Lost connections and requests never answered are Retryable, then retried."""
    h.agent.script(
        ResponseNeverReceived([Failure(ConnectionLost())]),
        ConnectionLost(),
        Reply(200),
    )
    d = h.push()
    h.clock.advance(0.5)
    h.clock.advance(1.0)
    assert isinstance(success_of(d), Delivered)
    assert h.client.stats.connection_errors == 2


def test_unknown_transport_exception_is_retryable_then_final() -> None:
    """Any exception from the agent classifies; past the deadline it is final."""
    h = Harness()
    h.agent.default = RuntimeError("h2 agent bug")
    d = h.push(deadline=START + 2)
    h.clock.advance(5)
    assert success_of(d) == Retryable("ConnectionError")


def test_body_lost_midway_still_classified_by_status(h: Harness) -> None:
    """A body cut off by a lost stream still yields an outcome from the status."""
    h.agent.script(Reply(410, b'{"reas', end="lost"))
    outcome = success_of(h.push())
    assert outcome == TokenRejected("Unknown", 410)
    assert h.rejected == [(TOKEN, "Unknown")]


def test_huge_body_is_capped_and_reading_stopped(h: Harness) -> None:
    """A megabyte error body is not buffered: reading stops, status classifies."""
    h.agent.script(Reply(400, b"x" * 1_000_000, chunks=1000))
    assert success_of(h.push()) == Failed(400, "Unknown")
    response = h.agent.requests[0].response
    assert response is not None and response.transport.stopped


def test_non_json_body(h: Harness) -> None:
    """An HTML error page from a proxy is classified by its status."""
    h.agent.script(Reply(502, b"<html>bad gateway</html>"), Reply(200))
    d = h.push()
    h.clock.advance(0.5)
    assert isinstance(success_of(d), Delivered)


def test_error_body_that_never_ends_times_out_into_its_status() -> None:
    """Status arrived but the body hangs: at the timeout the status decides."""
    h = Harness(request_timeout_s=3.0)
    h.agent.script(Reply(400, error_body("BadTopic"), end="never"))
    d = h.push()
    assert not d.called
    h.clock.advance(3)
    assert success_of(d) == Failed(400, "BadTopic")
    assert h.clock.getDelayedCalls() == []


def test_past_deadline_is_not_sent(h: Harness) -> None:
    """A push whose deadline has passed ends at once without a request."""
    assert success_of(h.push(deadline=START)) == Retryable("DeadlineExceeded")
    assert h.agent.requests == []


def test_overloaded_when_in_flight_and_queue_are_full() -> None:
    """Past max_in_flight + max_queued, push fails fast with Overloaded."""
    h = Harness(max_in_flight=1, max_queued=1)
    d1, d2, d3 = h.push(), h.push(), h.push()
    assert success_of(d3) == Overloaded()
    assert h.client.stats.overloaded == 1
    assert (h.client.in_flight, h.client.queued) == (1, 1)
    assert len(h.agent.requests) == 1
    h.agent.requests[0].answer(Reply(200))
    assert isinstance(success_of(d1), Delivered)
    assert len(h.agent.requests) == 2
    assert (h.client.in_flight, h.client.queued) == (1, 0)
    h.agent.requests[1].answer(Reply(200))
    assert isinstance(success_of(d2), Delivered)
    assert (h.client.in_flight, h.client.queued) == (0, 0)


def test_queued_push_past_its_deadline_is_dropped() -> None:
    """A push that waited in the queue beyond its deadline is never sent."""
    h = Harness(max_in_flight=1, max_queued=5)
    d1 = h.push()
    d2 = h.push(deadline=START + 5)
    h.clock.advance(6)
    h.agent.requests[0].answer(Reply(200))
    assert isinstance(success_of(d1), Delivered)
    assert success_of(d2) == Overloaded("deadline passed while queued")
    assert len(h.agent.requests) == 1


def test_many_synchronous_completions_do_not_recurse() -> None:
    """Draining a long queue of instant answers uses a loop, not the stack."""
    h = Harness(max_in_flight=1, max_queued=5000)
    first = h.push()
    rest = [h.push() for _ in range(3000)]
    h.agent.default = Reply(200)
    h.agent.requests[0].answer(Reply(200))
    assert isinstance(success_of(first), Delivered)
    assert all(isinstance(success_of(d), Delivered) for d in rest)


def test_cancel_in_flight(h: Harness) -> None:
    """Cancelling an in-flight push cancels its request and frees the slot."""
    d = h.push()
    d.cancel()
    assert failure_of(d).check(CancelledError)
    assert h.agent.requests[0].cancelled
    assert h.client.in_flight == 0
    assert h.clock.getDelayedCalls() == []
    assert h.client.stats.cancelled == 1


def test_cancel_queued() -> None:
    """Cancelling a queued push removes it; it is never sent."""
    h = Harness(max_in_flight=1)
    d1, d2 = h.push(), h.push()
    d2.cancel()
    assert failure_of(d2).check(CancelledError)
    assert h.client.queued == 0
    h.agent.requests[0].answer(Reply(200))
    assert isinstance(success_of(d1), Delivered)
    assert len(h.agent.requests) == 1


def test_cancel_during_backoff(h: Harness) -> None:
    """Cancelling while waiting to retry stops the retry timer."""
    h.agent.script(Reply(503, error_body("ServiceUnavailable")))
    d = h.push()
    d.cancel()
    assert failure_of(d).check(CancelledError)
    assert h.clock.getDelayedCalls() == []
    h.clock.advance(60)
    assert len(h.agent.requests) == 1
    assert h.client.in_flight == 0


def test_cancelled_slot_starts_the_next_push() -> None:
    """The slot a cancelled push frees goes to the next queued push."""
    h = Harness(max_in_flight=1)
    d1, d2 = h.push(), h.push()
    d1.cancel()
    failure_of(d1)
    assert len(h.agent.requests) == 2
    h.agent.requests[1].answer(Reply(200))
    assert isinstance(success_of(d2), Delivered)


def test_logs_never_carry_the_full_device_token(log_events: list[LogEvent]) -> None:
    """Rule 13: logged events name tokens by a short prefix only."""
    h = Harness()
    h.agent.script(
        Reply(410, error_body("Unregistered")), Reply(503, b""), Reply(400, b"")
    )
    success_of(h.push())
    h.push(deadline=START + 0.1)
    h.clock.advance(1)
    assert log_events
    for event in log_events:
        assert all(TOKEN not in repr(v) for v in event.values())


@pytest.mark.parametrize(
    "settings",
    [
        {"sandbox_host": "::1"},
        {"production_host": ""},
        {"production_host": "host/path"},
        {"production_port": 0},
        {"max_in_flight": 0},
        {"request_timeout_s": 0},
        {"jwt_refresh_after_s": 60},
    ],
)
def test_settings_validated(settings: dict[str, object]) -> None:
    """Bad settings fail at construction (IPv6 literals: treq cannot use them)."""
    with pytest.raises((ValueError, TypeError)):
        ApnsSettings(**settings)  # type: ignore[arg-type]


def test_close_ends_every_push_with_an_outcome() -> None:
    """close(): in-flight -> Retryable Shutdown, queued and new -> Overloaded."""
    h = Harness(max_in_flight=1)
    in_flight, queued = h.push(), h.push()
    closed = h.client.close()
    assert success_of(closed) is None
    assert success_of(in_flight) == Retryable("Shutdown")
    assert h.agent.requests[0].cancelled
    assert success_of(queued) == Overloaded("closed")
    assert success_of(h.push()) == Overloaded("closed")
    assert len(h.agent.requests) == 1
    assert h.clock.getDelayedCalls() == []


def test_close_with_grace_lets_in_flight_pushes_finish() -> None:
    """close(grace_s): in-flight pushes answered within the grace succeed;
    those still open when it ends are cancelled; new pushes are refused."""
    h = Harness(max_in_flight=2)
    quick, slow = h.push(), h.push()
    closed = h.client.close(grace_s=5)
    assert success_of(h.push()) == Overloaded("closed")
    h.clock.advance(1)
    h.agent.requests[0].answer(Reply(200))
    assert isinstance(success_of(quick), Delivered)
    assert not closed.called
    h.clock.advance(4)
    assert success_of(slow) == Retryable("Shutdown")
    assert h.agent.requests[1].cancelled
    assert success_of(closed) is None
    assert h.clock.getDelayedCalls() == []


def test_close_with_grace_fires_early_when_all_done() -> None:
    """Once the last in-flight push ends, close() fires and its timer goes."""
    h = Harness()
    d = h.push()
    closed = h.client.close(grace_s=30)
    h.agent.requests[0].answer(Reply(200))
    assert isinstance(success_of(d), Delivered)
    assert success_of(closed) is None
    assert h.clock.getDelayedCalls() == []


def test_close_during_backoff_and_when_idle(h: Harness) -> None:
    """A push waiting to retry ends at close; an idle client closes at once."""
    h.agent.script(Reply(503, error_body("ServiceUnavailable")))
    d = h.push()
    success_of(h.client.close())
    assert success_of(d) == Retryable("Shutdown")
    assert h.clock.getDelayedCalls() == []
    assert success_of(Harness().client.close()) is None


def _wrapped_cancel() -> ResponseNeverReceived:
    return ResponseNeverReceived([Failure(CancelledError())])


def test_cancel_with_agent_specific_error_stops_for_good(h: Harness) -> None:
    """An agent failing cancelled requests its own way does not revive the push."""
    h.agent.cancel_error = _wrapped_cancel()
    d = h.push()
    d.cancel()
    assert failure_of(d).check(CancelledError)
    h.clock.pump([0.5] * 80)
    assert len(h.agent.requests) == 1
    assert h.client.in_flight == 0
    assert h.clock.getDelayedCalls() == []


def test_timeout_with_agent_specific_error_is_a_timeout() -> None:
    """The timeout is recognised by our timer, whatever the agent raises."""
    h = Harness(request_timeout_s=1.0)
    h.agent.cancel_error = _wrapped_cancel()
    d = h.push(deadline=START + 1)
    h.clock.advance(1)
    assert success_of(d) == Retryable("Timeout")
    assert h.client.stats.timeouts == 1


def test_configured_expiration_applies_once_per_push() -> None:
    """expiration None takes settings.expiration_s from the first send; retries keep it."""
    h = Harness(expiration_s=5)
    h.agent.script(Reply(503, error_body("ServiceUnavailable")), Reply(200))
    d = h.push()
    h.clock.advance(0.5)
    assert isinstance(success_of(d), Delivered)
    expected = [str(int(START) + 5).encode()]
    assert [r.header(b"apns-expiration") for r in h.agent.requests] == [expected] * 2


def test_explicit_expiration_wins_over_settings() -> None:
    """A notification's own expiration (0 included) is sent as is."""
    h = Harness(expiration_s=5)
    h.agent.script(Reply(200))
    success_of(h.push(expiration=0))
    assert h.agent.requests[0].header(b"apns-expiration") == [b"0"]


class _OutcomeRecorder:
    """A ``PushObserver`` that records, and raises when told to."""

    def __init__(self, raises: bool = False) -> None:
        self.raises = raises
        self.heard: list[Outcome] = []

    def apns_outcome(self, outcome: Outcome) -> None:
        self.heard.append(outcome)
        if self.raises:
            raise RuntimeError("observer bug")


def test_push_observers_hear_each_final_outcome_once(
    log_events: list[LogEvent],
) -> None:
    """Each push's final outcome reaches observers once, sent or refused at
    once; an observer that raises is logged and the push still resolves."""
    h = Harness(max_in_flight=1, max_queued=0)
    broken, recorder = _OutcomeRecorder(raises=True), _OutcomeRecorder()
    h.client.add_observer(broken)
    h.client.add_observer(recorder)
    h.agent.script(Reply(200))
    n = h.notification()
    delivered = success_of(h.client.push(n))
    assert delivered == Delivered(n.apns_id)
    h.agent.script(PENDING)
    pending = h.push()
    assert success_of(h.push()) == Overloaded()
    assert recorder.heard == [delivered, Overloaded()]
    assert broken.heard == recorder.heard
    pending.cancel()
    assert failure_of(pending).check(CancelledError)
    assert len(recorder.heard) == 2  # a cancelled push has no outcome
    failures = [e for e in log_events if "log_failure" in e]
    assert [e["what"] for e in failures] == ["apns_outcome"] * 2
    for event in failures:
        event["expected"] = True


def _outcome_lines(events: list[LogEvent]) -> list[LogEvent]:
    return [
        e
        for e in events
        if e.get("log_format") == "APNs push {apns_id} to {token}: {outcome}"
    ]


def test_delivered_pushes_are_logged_only_when_debug_is_configured(
    h: Harness, log_events: list[LogEvent]
) -> None:
    """One debug line per delivered push costs every push ~6 us, so it is only
    made when ``[log] level = "debug"``; failures are logged at any level,
    and never with the whole token."""
    from twisted.logger import LogLevel

    from gateway import logging as gwlog
    from gateway.config import LogConfig

    h.agent.script(Reply(200), Reply(400, error_body("BadTopic")), Reply(200))
    assert isinstance(success_of(h.push()), Delivered)
    assert isinstance(success_of(h.push()), Failed)
    quiet = _outcome_lines(log_events)
    assert [e["log_level"] for e in quiet] == [LogLevel.warn]
    gwlog.configure(LogConfig(level="debug"))
    try:
        n = h.notification()
        assert success_of(h.client.push(n)) == Delivered(n.apns_id)
    finally:
        gwlog.configure(LogConfig())
    loud = _outcome_lines(log_events)[len(quiet) :]
    assert [(e["log_level"], e["apns_id"]) for e in loud] == [
        (LogLevel.debug, n.apns_id)
    ]
    assert all(TOKEN not in str(e["token"]) for e in quiet + loud)
