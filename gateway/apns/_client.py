"""The APNs client: POSTs pushes through any HTTP/2 ``IAgent`` via treq.

Each push ends in exactly one ``Outcome``: retryable answers are retried with
jittered exponential backoff (same ``apns-id``) until the push's deadline, a
stale provider token is refreshed and retried once, and everything the
transport can throw (lost connection, timeout, garbage) is classified rather
than surfacing as an error. In-flight pushes and the queue behind them are
bounded; past that ``push`` fails fast with ``Overloaded``.
"""

from __future__ import annotations

import contextlib
import functools
import random
import re
import typing
from collections import deque
from collections.abc import Callable, Coroutine
from http.client import HTTPResponse
from http.cookiejar import Cookie
from typing import Any, TypeVar
from urllib.request import Request

import attrs
from hyperlink import URL
from treq.client import HTTPClient
from treq.cookies import IndexableCookieJar
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IResponse

from gateway.apns._auth import ApnsAuth
from gateway.apns._outcome import (
    MAX_ERROR_BODY,
    Delivered,
    Failed,
    Outcome,
    Overloaded,
    Retryable,
    TokenRejected,
    classify,
    parse_retry_after,
)
from gateway.apns._payload import (
    ApnsNotification,
    expiration_at,
    request_headers,
    token_hint,
)
from gateway.apns._settings import ApnsSettings
from gateway.http2 import BytesProducer
from gateway.logging import debug_enabled
from gateway.observers import guard

__all__ = ["ApnsClient", "ApnsStats", "PushObserver", "TokenRejectedCallback"]

_T = TypeVar("_T")
TokenRejectedCallback = Callable[[str, str], object]

_APNS_ID_RE = re.compile(r"[0-9A-Fa-f-]{1,64}")
EXPIRED_PROVIDER_TOKEN = "ExpiredProviderToken"  # noqa: S105 - a reason, no secret
_DEADLINE_EXCEEDED = Retryable("DeadlineExceeded")


@attrs.define
class ApnsStats:
    """Monotonic counters for metrics; bounded (no per-token data)."""

    pushes: int = 0
    requests: int = 0
    retries: int = 0
    delivered: int = 0
    token_rejected: int = 0
    retryable: int = 0
    failed: int = 0
    overloaded: int = 0
    cancelled: int = 0
    timeouts: int = 0
    connection_errors: int = 0
    provider_token_refreshes: int = 0


def _to_producer(data: Any) -> IBodyProducer:
    """treq's body producer: the HTTP/2 agent's own, which it sends on its
    fast path (and which, unlike treq's default, needs no global reactor)."""
    if not isinstance(data, bytes):
        raise TypeError("APNs payloads are bytes")
    return BytesProducer(data)


class _NoCookies(IndexableCookieJar):
    """A cookie jar that stays empty: APNs uses no cookies.

    treq puts every request through a ``CookieAgent`` and, unless handed a jar
    as ``cookies=``, builds and merges a fresh one per request. With this jar as
    both the client's and each request's, that is a few calls doing nothing.
    """

    def add_cookie_header(self, request: Request) -> None:
        """No cookie to send."""

    def extract_cookies(self, response: HTTPResponse, request: Request) -> None:
        """Keep none."""

    def set_cookie(self, cookie: Cookie) -> None:
        """Keep none."""


class _DeviceURL(URL):
    """``https://host[:port]/3/device/<token>``, already in URI form.

    treq calls ``to_uri().to_text()`` on every URL, and hyperlink's ``to_uri``
    re-encodes the host through IDNA: about 40 us, more than the HTTP/2
    stream's own work. Here every part is ASCII already (``ApnsSettings``
    allows letters, digits, dots and hyphens in hosts, lower-cased here as IDNA
    would; tokens are hex), so the URL is its own URI form and its text is
    known when it is made.
    """

    _text: str | None = None

    @classmethod
    def build(cls, host: str, port: int, device_token: str) -> _DeviceURL:
        """The device URL, with its text worked out once.

        hyperlink's constructor re-checks every part (5 us a push); the
        endpoint's parts were checked when its template was built, and the
        token is hex, so the URL is the template with the token's path.
        """
        template = _url_template(host.lower(), port)
        url = cls.__new__(cls)
        url.__dict__.update(template.__dict__)
        url._path = ("3", "device", device_token)
        url._text = f"{template._text}{device_token}"
        return url

    def to_uri(self) -> URL:
        """Itself when built by ``build``: nothing to encode."""
        return self if self._text is not None else super().to_uri()

    def to_text(self, with_password: bool = False) -> str:
        """The text worked out by ``build``."""
        if self._text is not None:
            return self._text
        text: str = super().to_text(with_password)
        return text


@functools.lru_cache(maxsize=16)
def _url_template(host: str, port: int) -> _DeviceURL:
    """``https://host[:port]/3/device/``, checked by hyperlink once per
    endpoint (production, sandbox, or a configured override)."""
    url = _DeviceURL(scheme="https", host=host, port=port, path=("3", "device", ""))
    authority = host if port == 443 else f"{host}:{port}"
    url._text = f"https://{authority}/3/device/"
    return url


_Fields = dict[bytes, list[bytes]]


class _RequestHeaders(Headers):
    """Request headers that copy cheaply.

    treq's ``ContentDecoderAgent`` copies every request's headers, and
    ``Headers.copy`` re-encodes and re-sanitises each value; these values
    were sanitised when the push's fields were fixed, so a copy is a dict of
    lists.
    """

    __slots__ = ()

    @classmethod
    def of(cls, fields: _Fields, authorization: str | None) -> _RequestHeaders:
        """One attempt's headers: the push's fixed fields and the token.

        The value lists are shared with ``fields``: nothing below treq's
        ``ContentDecoderAgent`` sees these headers but through ``copy``.
        """
        headers = cls()
        raw = dict(fields)
        if authorization is not None:
            raw[_AUTHORIZATION] = [authorization.encode("ascii")]
        headers._rawHeaders = raw
        return headers

    def copy(self) -> _RequestHeaders:
        """The same headers, without checking them again."""
        new = _RequestHeaders()
        new._rawHeaders = {k: list(v) for k, v in self._rawHeaders.items()}
        return new


def _fixed_fields(notification: ApnsNotification, expiration: int | None) -> _Fields:
    """The fields every attempt of a push sends, keyed as ``Headers`` keeps
    them.

    No ``Headers`` check needed: every value comes from a field the
    notification validated (topic, UUID apns-id, enum push type, integers).
    """
    fields = request_headers(notification, None, expiration=expiration)
    return {_header_name(name): values for name, values in fields.items()}


@functools.cache
def _header_name(name: bytes) -> bytes:
    """``name`` as ``Headers`` stores it (Header-Case), worked out once for
    each of the few names a push sends."""
    ((stored, _),) = Headers({name: [b""]}).getAllRawHeaders()
    return stored


_AUTHORIZATION = _header_name(b"authorization")


class _CappedBody(Protocol):
    """Collects at most ``cap`` bytes of a response body, then stops reading.

    Its Deferred only ever succeeds (with what arrived) or is cancelled, so a
    body cut short still leaves the status to classify the response.
    """

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._data = bytearray()
        self.done: Deferred[bytes] = Deferred(lambda _: self._stop())

    @property
    def received(self) -> bytes:
        """What arrived so far (at most ``cap`` bytes)."""
        return bytes(self._data)

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        room = self._cap - len(self._data)
        self._data += data[:room]
        if len(data) > room:
            self._stop()
            self.done.callback(bytes(self._data))

    def connectionLost(self, reason: Failure | None = None) -> None:
        if not self.done.called:
            self.done.callback(bytes(self._data))

    def _stop(self) -> None:
        stop = getattr(self.transport, "stopProducing", None)
        if stop is not None:
            # Best effort: a foreign transport may already be gone.
            with contextlib.suppress(Exception):
                stop()


class _Discard(Protocol):
    """Drains a 200 body (empty from Apple) so the stream can finish."""


class _AttemptTimer:
    """One timeout over an attempt's several awaits; knows if it fired."""

    def __init__(self, clock: IReactorTime, timeout: float) -> None:
        self.fired = False
        self._current: Deferred[Any] | None = None
        self._call: IDelayedCall = clock.callLater(timeout, self._fire)

    def _fire(self) -> None:
        self.fired = True
        if self._current is not None:
            self._current.cancel()

    def guard(self, d: Deferred[_T]) -> Deferred[_T]:
        self._current = d
        if self.fired:
            d.cancel()
        return d

    def stop(self) -> None:
        if self._call.active():
            self._call.cancel()


@attrs.define(eq=False)
class _Job:
    notification: ApnsNotification
    result: Deferred[Outcome] = attrs.field(init=False)
    running: Deferred[Outcome] | None = None
    cancelled: bool = False
    shutdown: bool = False

    @property
    def stopping(self) -> bool:
        """Cancelled by its caller or by close(): no further attempt."""
        return self.cancelled or self.shutdown


class PushObserver(typing.Protocol):
    """Hears each push's final outcome once (metrics); cancelled pushes have
    none."""

    def apns_outcome(self, outcome: Outcome) -> None:
        """The outcome ``push``'s Deferred fires with."""


class ApnsClient:
    """Sends ``ApnsNotification``s to APNs; see the module docstring."""

    log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        agent: IAgent,
        auth: ApnsAuth,
        settings: ApnsSettings,
        on_token_rejected: TokenRejectedCallback | None = None,
        *,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._reactor = reactor
        self._cookies = _NoCookies()
        self._http = self._http_client(agent)
        self._auth = auth
        self._settings = settings
        self._on_token_rejected = on_token_rejected
        self._jitter = jitter
        self._queue: deque[_Job] = deque()
        self._in_flight = 0
        self._draining = False
        self._closed = False
        self._idle: list[Deferred[None]] = []
        self._running: set[_Job] = set()
        self.stats = ApnsStats()
        self._observers: list[PushObserver] = []

    def add_observer(self, observer: PushObserver) -> None:
        """Tell ``observer`` the final outcome of every push from now on."""
        self._observers.append(observer)

    @property
    def in_flight(self) -> int:
        """Pushes between their first attempt and their outcome."""
        return self._in_flight

    @property
    def queued(self) -> int:
        """Pushes waiting for an in-flight slot."""
        return len(self._queue)

    def push(self, notification: ApnsNotification) -> Deferred[Outcome]:
        """Send one push; the Deferred fires with its outcome, never fails.

        Cancelling it stops the push (queued, in flight or waiting to retry)
        and it fails with ``CancelledError``, as Twisted's convention has it.
        """
        self.stats.pushes += 1
        if notification.deadline <= self._reactor.seconds():
            self._record(notification, _DEADLINE_EXCEEDED)
            return succeed(_DEADLINE_EXCEEDED)
        if self._closed:
            return succeed(self._overloaded(notification, Overloaded("closed")))
        settings = self._settings
        if (
            self._in_flight >= settings.max_in_flight
            and len(self._queue) >= settings.max_queued
        ):
            return succeed(self._overloaded(notification, Overloaded()))
        job = _Job(notification)
        job.result = Deferred(lambda _: self._cancel(job))
        self._queue.append(job)
        self._drain()
        return job.result

    def replace_credentials(self, auth: ApnsAuth, agent: IAgent | None = None) -> None:
        """New credentials (SIGHUP): pushes from now on use ``auth`` and, for
        certificate auth, the ``agent`` that presents the new certificate."""
        self._auth = auth
        if agent is not None:
            self._http = self._http_client(agent)

    def _http_client(self, agent: IAgent) -> HTTPClient:
        return HTTPClient(
            agent, cookiejar=self._cookies, data_to_body_producer=_to_producer
        )

    def close(self, grace_s: float = 0.0) -> Deferred[None]:
        """Stop for service shutdown; fires once no push is in flight.

        New and queued pushes end as ``Overloaded("closed")``. Pushes in
        flight get ``grace_s`` seconds to finish (retries included); those
        still running then are cancelled and end as ``Retryable("Shutdown")``,
        so no caller hangs.
        """
        self._closed = True
        while self._queue:
            job = self._queue.popleft()
            job.result.callback(
                self._overloaded(job.notification, Overloaded("closed"))
            )
        if self._in_flight == 0:
            return succeed(None)
        idle: Deferred[None] = Deferred()
        self._idle.append(idle)
        if grace_s <= 0:
            self._cancel_running()
        else:
            timer = self._reactor.callLater(grace_s, self._cancel_running)
            idle.addBoth(lambda result: _cancel_timer(timer, result))
        return idle

    def _cancel_running(self) -> None:
        for job in list(self._running):
            job.shutdown = True
            if job.running is not None:
                job.running.cancel()

    def _overloaded(
        self, notification: ApnsNotification, outcome: Overloaded
    ) -> Overloaded:
        self.stats.overloaded += 1
        self.log.warn(
            "APNs push {apns_id} to {token} not sent: {reason}",
            apns_id=notification.apns_id,
            token=token_hint(notification.device_token),
            reason=outcome.reason,
        )
        self._observe(outcome)
        return outcome

    def _observe(self, outcome: Outcome) -> None:
        """Report a final outcome: ``_record`` and ``_overloaded`` each see
        every push that ends through them, and no push goes through both."""
        for observer in self._observers:
            guard(self, "apns_outcome", observer.apns_outcome, outcome)

    def _drain(self) -> None:
        # A loop, not recursion: pushes that finish synchronously would
        # otherwise nest one stack frame chain per queued push.
        if self._draining:
            return
        self._draining = True
        try:
            while self._queue and self._in_flight < self._settings.max_in_flight:
                job = self._queue.popleft()
                if job.notification.deadline <= self._reactor.seconds():
                    outcome = Overloaded("deadline passed while queued")
                    job.result.callback(self._overloaded(job.notification, outcome))
                    continue
                self._start(job)
        finally:
            self._draining = False

    def _start(self, job: _Job) -> None:
        self._in_flight += 1
        self._running.add(job)
        running = Deferred.fromCoroutine(self._deliver(job))
        job.running = running
        running.addBoth(self._finished, job)

    def _cancel(self, job: _Job) -> None:
        self.stats.cancelled += 1
        if job.running is None:
            if job in self._queue:
                self._queue.remove(job)
            return
        job.cancelled = True
        job.running.cancel()

    def _finished(self, result: Outcome | Failure, job: _Job) -> None:
        self._in_flight -= 1
        self._running.discard(job)
        job.running = None
        outcome: Outcome | None
        if isinstance(result, Failure):
            # A cancelled request may fail with the agent's own exception type.
            if job.cancelled:
                outcome = None
            elif job.shutdown:
                outcome = Retryable("Shutdown")
            else:
                self.log.failure(
                    "Unexpected error pushing {apns_id}",
                    result,
                    apns_id=job.notification.apns_id,
                )
                outcome = Failed(0, "InternalError")
        else:
            outcome = result
        if outcome is not None and not job.result.called:
            self._record(job.notification, outcome)
            job.result.callback(outcome)
        self._drain()
        if self._in_flight == 0 and self._idle:
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)

    def _record(self, notification: ApnsNotification, outcome: Outcome) -> None:
        self._observe(outcome)
        if isinstance(outcome, Delivered):
            self.stats.delivered += 1
            if debug_enabled():  # one line per delivered push: only on request
                self._log_outcome(LogLevel.debug, notification, outcome)
        elif isinstance(outcome, TokenRejected):
            self.stats.token_rejected += 1
            self._log_outcome(LogLevel.info, notification, outcome)
            self._token_rejected(notification.device_token, outcome.reason)
        elif isinstance(outcome, Retryable):
            self.stats.retryable += 1
            self._log_outcome(LogLevel.warn, notification, outcome)
        elif isinstance(outcome, Failed):
            self.stats.failed += 1
            self._log_outcome(LogLevel.warn, notification, outcome)
        else:
            self.stats.overloaded += 1

    def _log_outcome(
        self, level: LogLevel, notification: ApnsNotification, outcome: Outcome
    ) -> None:
        self.log.emit(
            level,
            "APNs push {apns_id} to {token}: {outcome}",
            apns_id=notification.apns_id,
            token=token_hint(notification.device_token),
            outcome=outcome,
        )

    def _token_rejected(self, device_token: str, reason: str) -> None:
        if self._on_token_rejected is None:
            return
        try:
            self._on_token_rejected(device_token, reason)
        except Exception:  # noqa: BLE001 - the registry's bug must not hang a push
            self.log.failure(
                "on_token_rejected failed for {token}", token=token_hint(device_token)
            )

    async def _deliver(self, job: _Job) -> Outcome:
        settings = self._settings
        notification = job.notification
        expiration = notification.expiration
        if expiration is None and settings.expiration_s > 0:
            # Fixed once per push, so every retry carries the same value
            # (None is sent as 0, what expiration_s = 0 means).
            expiration = expiration_at(self._reactor.seconds(), settings.expiration_s)
        # Everything but the provider token is the same on every attempt.
        fixed = _fixed_fields(notification, expiration)
        url = self._url(notification)
        attempt = 0
        refreshed = False
        outcome: Outcome = _DEADLINE_EXCEEDED
        while True:
            remaining = notification.deadline - self._reactor.seconds()
            if remaining <= 0:
                return outcome
            attempt += 1
            authorization = self._auth.authorization()
            outcome = await self._attempt(
                job,
                notification,
                url,
                fixed,
                authorization=authorization,
                time_limit=min(settings.request_timeout_s, remaining),
            )
            if (
                isinstance(outcome, Failed)
                and outcome.reason == EXPIRED_PROVIDER_TOKEN
                and not refreshed
            ):
                refreshed = True
                if self._auth.provider_token_expired(authorization):
                    self.stats.provider_token_refreshes += 1
                    continue
                return outcome
            if not isinstance(outcome, Retryable) or attempt >= settings.max_attempts:
                return outcome
            delay = self._backoff(attempt, outcome.retry_after)
            if self._reactor.seconds() + delay >= notification.deadline:
                return outcome
            self.stats.retries += 1
            self.log.info(
                "APNs push {apns_id} to {token}: {reason}, retry {attempt} in"
                " {delay:.2f}s",
                apns_id=notification.apns_id,
                token=token_hint(notification.device_token),
                reason=outcome.reason,
                attempt=attempt,
                delay=delay,
            )
            await deferLater(self._reactor, delay)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        settings = self._settings
        ceiling = min(
            settings.retry_max_s, settings.retry_base_s * 2.0 ** (attempt - 1)
        )
        delay = ceiling * (0.5 + self._jitter() / 2)
        return delay if retry_after is None else max(delay, retry_after)

    def _url(self, notification: ApnsNotification) -> _DeviceURL:
        host, port = self._settings.endpoint(notification.environment)
        return _DeviceURL.build(host, port, notification.device_token)

    async def _attempt(
        self,
        job: _Job,
        notification: ApnsNotification,
        url: URL,
        fixed: _Fields,
        *,
        authorization: str | None,
        time_limit: float,
    ) -> Outcome:
        self.stats.requests += 1
        timer = _AttemptTimer(self._reactor, time_limit)
        try:
            return await self._exchange(notification, url, fixed, authorization, timer)
        except Exception as e:  # any transport error is retryable
            if job.stopping:
                raise
            if timer.fired:
                self.stats.timeouts += 1
                return Retryable("Timeout")
            self.stats.connection_errors += 1
            self.log.info(
                "APNs push {apns_id}: transport error {error}",
                apns_id=notification.apns_id,
                error=type(e).__name__,
            )
            return Retryable("ConnectionError")
        finally:
            timer.stop()

    def _exchange(
        self,
        notification: ApnsNotification,
        url: URL,
        fixed: _Fields,
        authorization: str | None,
        timer: _AttemptTimer,
    ) -> Coroutine[Any, Any, Outcome]:
        # A plain function, so the headers die once treq has copied them.
        requested = self._http.post(
            url,
            data=notification.payload,
            headers=_RequestHeaders.of(fixed, authorization),
            allow_redirects=False,
            unbuffered=True,
            cookies=self._cookies,
        )
        return self._read(notification, timer.guard(requested), timer)

    async def _read(
        self,
        notification: ApnsNotification,
        requested: Deferred[Any],
        timer: _AttemptTimer,
    ) -> Outcome:
        response: IResponse = await requested
        status = response.code
        apns_id = _response_apns_id(response) or notification.apns_id
        if status == 200:
            response.deliverBody(_Discard())  # type: ignore[no-untyped-call]
            return Delivered(apns_id)
        body = _CappedBody(MAX_ERROR_BODY + 1)
        response.deliverBody(body)  # type: ignore[no-untyped-call]
        try:
            data = await timer.guard(body.done)
        except CancelledError:
            if not timer.fired:
                raise
            data = body.received  # the status alone still classifies it
        retry_after = parse_retry_after(response.headers.getRawHeaders(b"retry-after"))
        return classify(status, data, apns_id=apns_id, retry_after=retry_after)


def _response_apns_id(response: IResponse) -> str | None:
    values = response.headers.getRawHeaders(b"apns-id")
    if not values:
        return None
    try:
        value = values[0].decode("ascii")
    except UnicodeDecodeError:
        return None
    return value if _APNS_ID_RE.fullmatch(value) else None


def _cancel_timer(timer: IDelayedCall, result: _T) -> _T:
    if timer.active():
        timer.cancel()
    return result
