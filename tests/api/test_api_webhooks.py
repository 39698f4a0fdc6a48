"""Event webhooks: signed envelopes, retries with backoff, a bounded queue,
and call events from a real gateway to a real HTTP receiver."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from api_helpers import Client, base_url, close_device, connect_device, frame, until
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import Site

from gateway.api import WebhookSender, WebhookSettings, make_api_service, sign
from gateway.api._webhooks import webhook_settings
from gateway.app import attach, build_service
from gateway.config import load_config

SECRET = b"webhook-secret"


class FakePoster:
    """Records posts; answers each with the next scripted status or error."""

    def __init__(self, answers: list[int | Exception]) -> None:
        self.answers = answers
        self.posts: list[tuple[str, bytes, dict[str, str], float]] = []

    def __call__(
        self, url: str, body: bytes, headers: dict[str, str], timeout: float
    ) -> Deferred[int]:
        self.posts.append((url, body, headers, timeout))
        answer = self.answers.pop(0) if self.answers else 200
        if isinstance(answer, Exception):
            return fail(answer)
        return succeed(answer)


def settings(**kw: Any) -> WebhookSettings:
    return WebhookSettings(url="http://hooks.example/voipgw", secret=SECRET, **kw)


def test_event_is_signed_over_the_exact_body() -> None:
    """The envelope carries id, type, time and data; the signature is
    HMAC-SHA256 of the body with the shared secret."""
    clock = Clock()
    clock.advance(1000)
    poster = FakePoster([200])
    sender = WebhookSender(clock, settings(), poster=poster)
    event_id = sender.emit("call.ended", {"call_id": "c1"})
    ((url, body, headers, timeout),) = poster.posts
    assert url == "http://hooks.example/voipgw"
    envelope = json.loads(body)
    assert envelope == {
        "id": event_id,
        "type": "call.ended",
        "created_at": 1000.0,
        "data": {"call_id": "c1"},
    }
    expected = hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    assert headers["X-Voipgw-Signature"] == f"sha256={expected}"
    assert headers["X-Voipgw-Event"] == "call.ended"
    assert headers["X-Voipgw-Delivery"] == event_id
    assert timeout == 5.0
    assert sender.depth == 0


def test_failures_are_retried_with_exponential_backoff() -> None:
    """5xx, 429 and network errors retry after 1, 2, 4 s ...; success stops."""
    clock = Clock()
    poster = FakePoster([503, 429, ConnectionRefusedError(), 200])
    sender = WebhookSender(clock, settings(backoff_s=1.0), poster=poster)
    sender.emit("call.ringing", {})
    assert len(poster.posts) == 1
    for delay, count in ((1.0, 2), (2.0, 3), (4.0, 4)):
        clock.advance(delay - 0.01)
        assert len(poster.posts) == count - 1
        clock.advance(0.01)
        assert len(poster.posts) == count
    assert {p[1] for p in poster.posts} == {poster.posts[0][1]}  # same event
    assert sender.depth == 0
    assert clock.getDelayedCalls() == []


def test_client_errors_are_final_and_attempts_are_capped() -> None:
    """A 400 is not retried; a dead endpoint is given up after max_attempts."""
    clock = Clock()
    poster = FakePoster([400])
    sender = WebhookSender(clock, settings(), poster=poster)
    sender.emit("call.ended", {})
    clock.advance(1000)
    assert len(poster.posts) == 1
    always = FakePoster([500] * 10)
    capped = WebhookSender(clock, settings(max_attempts=3), poster=always)
    capped.emit("call.ended", {})
    clock.pump([60.0] * 20)
    assert len(always.posts) == 3
    assert capped.depth == 0


def test_queue_is_bounded_and_filters_event_types() -> None:
    """Past max_queue new events are dropped; unsubscribed types are ignored;
    stop drops what is left and cancels retry timers."""
    clock = Clock()
    stuck: list[Deferred[int]] = []

    def poster(
        url: str, body: bytes, headers: dict[str, str], t: float
    ) -> Deferred[int]:
        d: Deferred[int] = Deferred()
        stuck.append(d)
        return d

    sender = WebhookSender(
        clock,
        settings(max_queue=3, concurrency=1, events=("call.ended",)),
        poster=poster,
    )
    assert sender.emit("call.started", {}) is None
    ids = [sender.emit("call.ended", {"n": n}) for n in range(5)]
    assert [i is not None for i in ids] == [True, True, True, False, False]
    assert (len(stuck), sender.depth) == (1, 3)
    stuck[0].callback(500)  # first one now waits to retry
    assert len(stuck) == 2
    sender.stop()
    assert clock.getDelayedCalls() == []
    assert sender.emit("call.ended", {}) is None


def test_settings_from_a_webhooks_config_section(tmp_path: Path) -> None:
    """A [webhooks] section (once config.py has one) becomes settings; the
    secret file's trailing newline is stripped; disabled or absent is None."""
    secret = tmp_path / "secret"
    secret.write_bytes(b"s3cret\n")

    class Section:
        enabled = True
        url = "https://hooks.example/x"
        secret_file = secret
        events = ["call.ended"]
        timeout_s = 2.0
        max_queue = 10
        max_attempts = 3
        backoff_s = 0.5
        backoff_max_s = 10.0

    class Config:
        webhooks = Section()

    got = webhook_settings(Config())  # type: ignore[arg-type]
    assert got == WebhookSettings(
        url="https://hooks.example/x",
        secret=b"s3cret",
        events=("call.ended",),
        timeout_s=2.0,
        max_queue=10,
        max_attempts=3,
        backoff_s=0.5,
        backoff_max_s=10.0,
    )
    Section.enabled = False
    assert webhook_settings(Config()) is None  # type: ignore[arg-type]
    assert webhook_settings(object()) is None  # type: ignore[arg-type]


def test_sign_matches_the_documented_recipe() -> None:
    """docs/api.md shows receivers this exact computation."""
    body = b'{"id":"x"}'
    assert sign(b"k", body) == "sha256=" + hmac.new(b"k", body, "sha256").hexdigest()


class Receiver(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[dict[str, Any], str]] = []

    def render_POST(self, request: Any) -> bytes:
        body = request.content.read()
        signature = request.getHeader("x-voipgw-signature")
        self.events.append((json.loads(body), signature))
        assert signature == sign(SECRET, body)
        return b"ok"


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_call_events_reach_a_real_receiver(tmp_path: Path) -> None:
    """An API call that rings and is cancelled posts call.ringing and
    call.ended, and a message message.stored (signed, via treq), to the
    integrator's URL."""
    receiver = Receiver()
    port = reactor.listenTCP(0, Site(receiver), interface="127.0.0.1")
    from api_helpers import KEY
    from gw_example import EPHEMERAL, EXAMPLE

    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "voipgw.toml").write_bytes(EXAMPLE.read_bytes())
    keys = etc / "keys"
    keys.write_text(KEY + "\n")
    keys.chmod(0o600)
    env = {
        **EPHEMERAL,
        "VOIPGW_API__KEYS_FILE": str(keys),
        "VOIPGW_API__ENABLED": "false",
    }
    config = load_config(etc / "voipgw.toml", environ=env)
    gateway = build_service(config, reactor)  # type: ignore[arg-type]
    hooks = WebhookSettings(
        url=f"http://127.0.0.1:{port.getHost().port}/hooks", secret=SECRET
    )
    attach(make_api_service(gateway, webhooks=hooks), "api", gateway)
    gateway.startService()
    try:
        client = Client(base_url(gateway))
        device = await connect_device(gateway, "hook-phone")
        created = await client.post(
            "/v1/calls", {"to": "sip:bob@example.com", "caller": {"handle": "7"}}
        )
        pushed = await device.next_frame()
        device.transport.write(frame({"type": "ack", "id": pushed["id"]}))
        await until(lambda: len(receiver.events) >= 1)
        await client.delete(f"/v1/calls/{created.body['call_id']}")
        cancel = await device.next_frame()
        device.transport.write(frame({"type": "ack", "id": cancel["id"]}))
        await until(lambda: len(receiver.events) >= 2)
        types = [event["type"] for event, _ in receiver.events]
        assert types == ["call.ringing", "call.ended"]
        ended = receiver.events[1][0]["data"]
        assert (ended["call_id"], ended["outcome"]) == (
            created.body["call_id"],
            "cancelled",
        )
        sent = await client.post(
            "/v1/messages",
            {"device_ids": ["hook-phone"], "from": {"handle": "7"}, "body": "hi"},
        )
        await until(lambda: len(receiver.events) >= 3)
        stored = receiver.events[2][0]
        assert (stored["type"], stored["data"]) == (
            "message.stored",
            {"message_id": sent.body["message_id"], "device_ids": ["hook-phone"]},
        )
        await close_device(device)
    finally:
        await gateway.stopService()
        await port.stopListening()
