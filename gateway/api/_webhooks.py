"""Event webhooks: call and message events POSTed to the integrator.

Each event is a JSON envelope ``{"id", "type", "created_at", "data"}``
signed with HMAC-SHA256 over the exact body bytes, sent as
``X-Voipgw-Signature: sha256=<hex>``. Delivery is at least once: failures
(network errors, timeouts, 408, 429, 5xx) are retried with exponential
backoff up to ``max_attempts``; other 4xx answers are final. Events wait in
a bounded queue; when it is full new events are dropped and counted, so a
dead endpoint cannot grow the gateway's memory. Order is not guaranteed:
receivers should use ``created_at`` and ``id`` (for de-duplication).

Settings come in as a ``WebhookSettings`` value; ``webhook_settings`` reads
them from a ``[webhooks]`` config section once config.py has one.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import treq
from treq.client import HTTPClient
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers

from gateway.api._views import call_view
from gateway.calls.dispatcher import ActiveCall
from gateway.config import WEBHOOK_EVENTS, Config
from gateway.ids import new_uuid4

if TYPE_CHECKING:
    from gateway.metrics import Metrics

__all__ = [
    "EVENT_TYPES",
    "WebhookObserver",
    "WebhookSender",
    "WebhookSettings",
    "sign",
    "webhook_settings",
]

EVENT_TYPES = WEBHOOK_EVENTS  # validated against in config.py
SIGNATURE_HEADER = "X-Voipgw-Signature"

# (url, body, headers, timeout_s) -> Deferred firing with the HTTP status.
Poster = Callable[[str, bytes, dict[str, str], float], "Deferred[int]"]


@attrs.frozen
class WebhookSettings:
    """Where events go and how hard to try."""

    url: str
    secret: bytes = attrs.field(repr=False)
    events: tuple[str, ...] = ("call.ringing", "call.ended", "message.stored")
    timeout_s: float = 5.0
    max_queue: int = 10_000
    max_attempts: int = 8
    backoff_s: float = 1.0
    backoff_max_s: float = 300.0
    concurrency: int = 8


def sign(secret: bytes, body: bytes) -> str:
    """The signature header's value for ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def webhook_settings(config: Config) -> WebhookSettings | None:
    """Settings from a ``[webhooks]`` section, if config.py defines one and
    it is enabled; None otherwise."""
    section: Any = getattr(config, "webhooks", None)
    if section is None or not getattr(section, "enabled", False) or not section.url:
        return None
    secret_file: Path = section.secret_file
    secret = secret_file.read_bytes().rstrip(b"\r\n")
    return WebhookSettings(
        url=section.url,
        secret=secret,
        events=tuple(section.events),
        timeout_s=section.timeout_s,
        max_queue=section.max_queue,
        max_attempts=section.max_attempts,
        backoff_s=section.backoff_s,
        backoff_max_s=section.backoff_max_s,
    )


@attrs.define
class _Delivery:
    event_id: str
    event_type: str
    body: bytes
    attempts: int = 0


class WebhookSender:
    """A bounded queue of events and a few workers POSTing them."""

    log = Logger()

    def __init__(
        self,
        clock: Any,
        settings: WebhookSettings,
        *,
        poster: Poster | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._clock: IReactorTime = clock
        self.settings = settings
        self._poster = poster or _treq_poster(clock)  # the gateway's reactor
        self._metrics = metrics
        self._queue: collections.deque[_Delivery] = collections.deque()
        self._waiting: dict[str, tuple[_Delivery, IDelayedCall]] = {}
        self._busy = 0
        self._stopped = False

    @property
    def depth(self) -> int:
        """Events queued, sending or waiting to retry (bounded by max_queue)."""
        return len(self._queue) + len(self._waiting) + self._busy

    def wants(self, event_type: str) -> bool:
        """Whether ``event_type`` is subscribed (skip building unwanted data)."""
        return not self._stopped and event_type in self.settings.events

    def emit(self, event_type: str, data: dict[str, Any]) -> str | None:
        """Queue an event; its id, or None if filtered out or dropped."""
        if self._stopped or event_type not in self.settings.events:
            return None
        if self.depth >= self.settings.max_queue:
            self._count("dropped")
            self.log.warn(
                "Webhook queue full ({depth}): {event_type} dropped",
                depth=self.depth,
                event_type=event_type,
            )
            return None
        event_id = new_uuid4()
        envelope = {
            "id": event_id,
            "type": event_type,
            "created_at": self._clock.seconds(),
            "data": data,
        }
        body = json.dumps(envelope, separators=(",", ":")).encode()
        self._queue.append(_Delivery(event_id, event_type, body))
        self._pump()
        return event_id

    def stop(self) -> Deferred[None]:
        """Stop sending; queued and waiting events are dropped (logged)."""
        self._stopped = True
        for _, timer in self._waiting.values():
            if timer.active():
                timer.cancel()
        lost = len(self._queue) + len(self._waiting)
        self._queue.clear()
        self._waiting.clear()
        if lost:
            self.log.warn("Webhooks: {count} undelivered events dropped", count=lost)
        return succeed(None)

    def _pump(self) -> None:
        while self._queue and self._busy < self.settings.concurrency:
            delivery = self._queue.popleft()
            self._busy += 1
            self._send(delivery)

    def _send(self, delivery: _Delivery) -> None:
        delivery.attempts += 1
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "voipgw-webhooks",
            SIGNATURE_HEADER: sign(self.settings.secret, delivery.body),
            "X-Voipgw-Event": delivery.event_type,
            "X-Voipgw-Delivery": delivery.event_id,
        }
        try:
            d = self._poster(
                self.settings.url, delivery.body, headers, self.settings.timeout_s
            )
        except Exception as e:  # noqa: BLE001 - a poster bug is one failed attempt
            self._after(delivery, None, repr(e))
            return
        d.addCallbacks(
            lambda status: self._after(delivery, status, None),
            lambda f: self._after(delivery, None, f.getErrorMessage()),
        )

    def _after(
        self, delivery: _Delivery, status: int | None, error: str | None
    ) -> None:
        self._busy -= 1
        if self._stopped:
            return
        if status is not None and 200 <= status < 300:
            self._count("delivered")
        elif (
            status is not None and status < 500 and status not in (408, 429)
        ) or delivery.attempts >= self.settings.max_attempts:
            self._count("failed")
            self.log.warn(
                "Webhook {event_type} {event_id} failed after {attempts} "
                "attempt(s): {why}",
                event_type=delivery.event_type,
                event_id=delivery.event_id,
                attempts=delivery.attempts,
                why=f"HTTP {status}" if status is not None else error,
            )
        else:
            self._count("retried")
            delay = min(
                self.settings.backoff_max_s,
                self.settings.backoff_s * 2 ** (delivery.attempts - 1),
            )
            timer = self._clock.callLater(delay, self._retry, delivery.event_id)
            self._waiting[delivery.event_id] = (delivery, timer)
        self._pump()

    def _retry(self, event_id: str) -> None:
        delivery, _ = self._waiting.pop(event_id)
        self._queue.append(delivery)
        self._pump()

    def _count(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.webhook(result)


def _treq_poster(reactor: Any) -> Poster:
    """POST with treq over a persistent pool on the gateway's reactor."""
    pool = HTTPConnectionPool(reactor)  # type: ignore[no-untyped-call]
    client = HTTPClient(Agent(reactor, pool=pool))  # type: ignore[no-untyped-call]

    def post(
        url: str, body: bytes, headers: dict[str, str], timeout: float
    ) -> Deferred[int]:
        d: Deferred[Any] = client.post(
            url,
            data=body,
            headers=Headers({k: [v] for k, v in headers.items()}),
            timeout=timeout,
            reactor=reactor,
        )

        def status(response: Any) -> Deferred[int]:
            # Read the body so the connection returns to the pool.
            done: Deferred[Any] = treq.content(response)
            return done.addCallback(lambda _: int(response.code))

        return d.addCallback(status)

    return post


class WebhookObserver:
    """Turns calls and messages into webhook events: a ``CallObserver`` of
    the dispatcher and a ``MessageObserver`` of the messenger."""

    def __init__(self, sender: WebhookSender) -> None:
        self._sender = sender

    def call_started(self, call: ActiveCall) -> None:
        self._call("call.started", call)

    def call_ringing(self, call: ActiveCall) -> None:
        self._call("call.ringing", call)

    def call_ended(self, call: ActiveCall) -> None:
        self._call("call.ended", call)

    def message_stored(self, message_id: str, device_ids: tuple[str, ...]) -> None:
        if self._sender.wants("message.stored"):
            data = {"message_id": message_id, "device_ids": list(device_ids)}
            self._sender.emit("message.stored", data)

    def message_failed(self, message_id: str) -> None:
        """No webhook event: the sender of the message learns it directly."""

    def message_no_devices(self) -> None:
        """No webhook event: the sender of the message learns it directly."""

    def _call(self, event_type: str, call: ActiveCall) -> None:
        if self._sender.wants(event_type):
            self._sender.emit(event_type, call_view(call))
