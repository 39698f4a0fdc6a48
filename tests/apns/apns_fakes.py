"""An in-memory IAgent standing in for APNs: records requests, plays a script.

Each request takes the next scripted reply: a ``Reply`` (status, body,
headers, and how the body ends), an exception (transport failure), or
``PENDING`` (never answers until the test acts on the recorded request).
"""

from __future__ import annotations

import json
from collections import deque
from typing import Literal, TypeVar

import attrs
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IProtocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IResponse
from zope.interface import implementer

from gateway.apns import (
    ApnsClient,
    ApnsNotification,
    ApnsSettings,
    Environment,
    Outcome,
    PushType,
    TokenAuth,
    topic_for,
)

PENDING: Literal["pending"] = "pending"
T = TypeVar("T")


@attrs.frozen
class Reply:
    """A scripted response; ``end`` says how its body stream finishes."""

    status: int
    body: bytes = b""
    headers: dict[bytes, list[bytes]] = attrs.field(factory=dict)
    chunks: int = 1
    end: Literal["done", "lost", "never"] = "done"


@implementer(IConsumer)
class _Collect:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def registerProducer(self, producer: object, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass


class _BodyTransport:
    """What the body protocol sees as its transport; records stopProducing."""

    def __init__(self) -> None:
        self.stopped = False

    def stopProducing(self) -> None:
        self.stopped = True

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass


@implementer(IResponse)
class FakeResponse:
    """A minimal IResponse that streams a scripted body to deliverBody."""

    version = (b"HTTP", 2, 0)
    phrase = b"Fake"
    previousResponse = None
    request = None

    def __init__(self, reply: Reply) -> None:
        self.code = reply.status
        self.headers = Headers(reply.headers)
        self.length = object()  # UNKNOWN_LENGTH-like: never 0
        self._reply = reply
        self.transport = _BodyTransport()
        self.delivered_to: IProtocol | None = None

    def deliverBody(self, protocol: IProtocol) -> None:
        self.delivered_to = protocol
        protocol.makeConnection(self.transport)  # type: ignore[arg-type]
        body = self._reply.body
        n = max(1, self._reply.chunks)
        size = max(1, -(-len(body) // n))
        for i in range(0, len(body), size):
            if self.transport.stopped:
                return
            protocol.dataReceived(body[i : i + size])
        if self._reply.end == "done":
            protocol.connectionLost(Failure(ResponseDone()))
        elif self._reply.end == "lost":
            protocol.connectionLost(Failure(ResponseFailed([Failure(OSError())])))

    def setPreviousResponse(self, response: IResponse) -> None:
        pass


@attrs.define(eq=False)
class Recorded:
    """One request the client made, and its Deferred for PENDING replies."""

    method: bytes
    uri: bytes
    headers: Headers
    body: bytes
    deferred: Deferred[IResponse]
    at: float
    cancelled: bool = False
    response: FakeResponse | None = None

    def header(self, name: bytes) -> list[bytes] | None:
        """All raw values of one request header (case-insensitive)."""
        return self.headers.getRawHeaders(name)

    def answer(self, reply: Reply) -> None:
        """Answer a PENDING request now."""
        self.response = FakeResponse(reply)
        self.deferred.callback(self.response)  # type: ignore[arg-type]


Script = Reply | BaseException | Literal["pending"]


@implementer(IAgent)
class FakeAgent:
    """Records requests and answers each with the next scripted item."""

    def __init__(self, clock: object = None, *script: Script) -> None:
        self.requests: list[Recorded] = []
        self._script: deque[Script] = deque(script)
        self._clock = clock
        self.default: Script = PENDING
        # Twisted's HTTP/1.1 Agent fails a cancelled request with
        # ResponseNeverReceived, not CancelledError; set this to mimic that.
        self.cancel_error: BaseException | None = None

    def script(self, *items: Script) -> None:
        """Queue more replies."""
        self._script.extend(items)

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: IBodyProducer | None = None,
    ) -> Deferred[IResponse]:
        consumer = _Collect()
        if bodyProducer is not None:
            bodyProducer.startProducing(consumer)

        def cancel(d: Deferred[IResponse]) -> None:
            rec.cancelled = True
            if self.cancel_error is not None:
                d.errback(Failure(self.cancel_error))

        d: Deferred[IResponse] = Deferred(cancel)
        now = self._clock.seconds() if self._clock is not None else 0.0  # type: ignore[attr-defined]
        rec = Recorded(method, uri, headers or Headers(), consumer.data, d, now)
        self.requests.append(rec)
        item = self._script.popleft() if self._script else self.default
        if isinstance(item, Reply):
            rec.answer(item)
        elif isinstance(item, BaseException):
            d.errback(Failure(item))
        return d


def success_of(d: Deferred[T]) -> T:
    """The result of a Deferred that must already have succeeded."""
    results: list[T | Failure] = []
    d.addBoth(results.append)
    assert results, "Deferred has not fired"
    result = results[0]
    if isinstance(result, Failure):
        result.raiseException()
    return result  # type: ignore[return-value]


def failure_of(d: Deferred[object]) -> Failure:
    """The Failure of a Deferred that must already have failed."""
    results: list[object] = []
    d.addBoth(results.append)
    assert results, "Deferred has not fired"
    assert isinstance(results[0], Failure), f"succeeded with {results[0]!r}"
    return results[0]


START = 1_800_000_000.0
TOKEN = "0123456789abcdef" * 4
KID = "ABC123DEFG"
TEAM = "DEF123GHIJ"
PAYLOAD = b'{"aps":{},"callUUID":"c1"}'


def error_body(reason: str) -> bytes:
    return json.dumps({"reason": reason}).encode()


class Harness:
    """A client wired to a fake agent, a clock and a rejection recorder."""

    def __init__(self, jitter: float = 1.0, **settings: object) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.auth = TokenAuth(self.clock, self.key, key_id=KID, team_id=TEAM)
        self.agent = FakeAgent(self.clock)
        self.rejected: list[tuple[str, str]] = []
        self.settings = ApnsSettings(**settings)  # type: ignore[arg-type]
        self.client = ApnsClient(
            self.clock,
            self.agent,
            self.auth,
            self.settings,
            on_token_rejected=lambda t, r: self.rejected.append((t, r)),
            jitter=lambda: jitter,
        )

    def notification(self, **kw: object) -> ApnsNotification:
        args: dict[str, object] = {
            "device_token": TOKEN,
            "environment": Environment.PRODUCTION,
            "push_type": PushType.VOIP,
            "topic": topic_for("com.example.phone", PushType.VOIP),
            "payload": PAYLOAD,
            "deadline": START + 30,
        }
        args.update(kw)
        return ApnsNotification(**args)  # type: ignore[arg-type]

    def push(self, **kw: object) -> Deferred[Outcome]:
        return self.client.push(self.notification(**kw))
