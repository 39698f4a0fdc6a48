"""ApnsClient over the project's HTTP/2 agent against a fake APNs on 127.0.0.1.

The fake is Twisted's own HTTP/2 server (``Site`` over TLS with ALPN ``h2``)
with a resource that answers like APNs; it checks what really goes on the
wire: lower-case headers, the path, the JWT, the payload.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import jwt
import pytest
import pytest_twisted
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.ssl import CertificateOptions, PrivateCertificate
from twisted.web import resource, server
from twisted.web.server import Request

from gateway.apns import (
    ApnsClient,
    ApnsNotification,
    ApnsSettings,
    Delivered,
    Environment,
    PushType,
    Retryable,
    TokenAuth,
    TokenRejected,
    topic_for,
    voip_payload,
)

http2 = pytest.importorskip("gateway.http2")
pytestmark = pytest.mark.integration

TOKEN = "fedcba9876543210" * 4
KID = "ABC123DEFG"
TEAM = "DEF123GHIJ"

Answer = Callable[[Request], tuple[int, bytes] | None]


class FakeApns(resource.Resource):
    """Records requests; ``answers`` pops one reply per request (None: hang)."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[dict[str, Any]] = []
        self.answers: list[tuple[int, bytes] | None] = []

    def render_POST(self, request: Request) -> bytes | int:
        headers = {
            k.decode().lower(): [x.decode() for x in v]
            for k, v in request.requestHeaders.getAllRawHeaders()
        }
        body = request.content.read() if request.content is not None else b""
        self.seen.append(
            {
                "proto": request.clientproto,
                "path": request.path,
                "headers": headers,
                "body": body,
            }
        )
        answer = self.answers.pop(0) if self.answers else (200, b"")
        if answer is None:
            return server.NOT_DONE_YET
        status, payload = answer
        request.setResponseCode(status)
        request.setHeader(b"apns-id", headers["apns-id"][0].encode())
        return payload


def _tls(cert: Path, key: Path) -> CertificateOptions:
    pc = PrivateCertificate.loadPEM(cert.read_bytes() + key.read_bytes())
    return CertificateOptions(
        privateKey=pc.privateKey.original,
        certificate=pc.original,
        acceptableProtocols=[b"h2"],
    )


@pytest.fixture
def apns(
    tls_pair: tuple[Path, Path],
) -> Generator[tuple[FakeApns, ApnsClient, Any, list[tuple[str, str]]], None, None]:
    """A fake APNs listening on 127.0.0.1 and a client pointed at it."""
    fake = FakeApns()
    port = reactor.listenSSL(  # type: ignore[attr-defined]
        0, server.Site(fake), _tls(*tls_pair), interface="127.0.0.1"
    )
    agent = http2.H2Agent(reactor, ca_file=tls_pair[0], ping_interval=None)
    key = ec.generate_private_key(ec.SECP256R1())
    auth = TokenAuth(reactor, key, key_id=KID, team_id=TEAM)  # type: ignore[arg-type]
    rejected: list[tuple[str, str]] = []
    settings = ApnsSettings(
        production_host="127.0.0.1",
        production_port=port.getHost().port,
        retry_base_s=0.01,
        retry_max_s=0.05,
        request_timeout_s=5.0,
    )
    client = ApnsClient(
        reactor,  # type: ignore[arg-type]
        agent,
        auth,
        settings,
        on_token_rejected=lambda t, r: rejected.append((t, r)),
    )
    yield fake, client, key, rejected
    pytest_twisted.blockon(agent.close())
    pytest_twisted.blockon(port.stopListening())


def _voip(deadline_s: float = 10.0) -> ApnsNotification:
    payload = voip_payload(
        call_uuid="c0ffee00-0000-4000-8000-000000000001",
        handle="+4930123",
        display_name="Jürgen",
        video=False,
        to="sip:bob@example.com",
        headers={"X-Tenant": "acme"},
    )
    return ApnsNotification(
        device_token=TOKEN,
        environment=Environment.PRODUCTION,
        push_type=PushType.VOIP,
        topic=topic_for("com.example.phone", PushType.VOIP),
        payload=payload,
        deadline=reactor.seconds() + deadline_s,  # type: ignore[attr-defined]
    )


@pytest_twisted.inlineCallbacks
def test_voip_push_on_the_wire(
    apns: tuple[FakeApns, ApnsClient, Any, list[tuple[str, str]]],
) -> Generator[Deferred[Any], Any, None]:
    """The request APNs sees: h2, path, apns-* headers, bearer JWT, exact payload."""
    fake, client, key, _ = apns
    n = _voip()
    outcome = yield client.push(n)
    assert outcome == Delivered(n.apns_id)
    (seen,) = fake.seen
    assert seen["proto"] == b"HTTP/2"
    assert seen["path"] == b"/3/device/" + TOKEN.encode()
    h = seen["headers"]
    assert h["apns-push-type"] == ["voip"]
    assert h["apns-topic"] == ["com.example.phone.voip"]
    assert h["apns-priority"] == ["10"]
    assert h["apns-expiration"] == ["0"]
    assert h["apns-id"] == [n.apns_id]
    assert "apns-collapse-id" not in h
    scheme, token = h["authorization"][0].split(" ")
    assert scheme == "bearer"
    claims = jwt.decode(
        token, key.public_key(), algorithms=["ES256"], options={"verify_iat": False}
    )
    assert claims["iss"] == TEAM
    assert seen["body"] == n.payload
    assert json.loads(seen["body"])["display_name"] == "Jürgen"


@pytest_twisted.inlineCallbacks
def test_unregistered_and_retry_over_h2(
    apns: tuple[FakeApns, ApnsClient, Any, list[tuple[str, str]]],
) -> Generator[Deferred[Any], Any, None]:
    """410 reaches the registry callback; 503 is retried with the same apns-id."""
    fake, client, _, rejected = apns
    fake.answers = [(410, b'{"reason":"Unregistered","timestamp":1700000000000}')]
    outcome = yield client.push(_voip())
    assert outcome == TokenRejected("Unregistered", 410, 1_700_000_000_000.0)
    assert rejected == [(TOKEN, "Unregistered")]
    fake.answers = [(503, b'{"reason":"ServiceUnavailable"}'), (200, b"")]
    n = _voip()
    outcome = yield client.push(n)
    assert outcome == Delivered(n.apns_id)
    assert [s["headers"]["apns-id"] for s in fake.seen[1:]] == [[n.apns_id]] * 2


@pytest_twisted.inlineCallbacks
def test_hanging_server_times_out_at_the_deadline(
    apns: tuple[FakeApns, ApnsClient, Any, list[tuple[str, str]]],
) -> Generator[Deferred[Any], Any, None]:
    """A server that never answers yields Retryable Timeout by the deadline."""
    fake, client, _, _ = apns
    fake.answers = [None]
    outcome = yield client.push(_voip(deadline_s=0.5))
    assert outcome == Retryable("Timeout")


@pytest_twisted.inlineCallbacks
def test_pushes_leave_no_reference_cycles(
    apns: tuple[FakeApns, ApnsClient, Any, list[tuple[str, str]]],
) -> Generator[Deferred[Any], Any, None]:
    """Delivered, rejected and retried pushes are freed by reference counting:
    no gateway object is left for the cycle collector (gateway.gcpolicy counts
    on it, and each push's cycle made the collector run twice as often)."""
    fake, client, _, _ = apns
    yield client.push(_voip())  # connection set up outside the check
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    # Objects alive now (earlier tests' agents among them, which their timers
    # may still let go of while this test runs) are not this test's garbage.
    before = {id(o) for o in gc.get_objects()}
    try:
        fake.answers = [
            (200, b""),
            (410, b'{"reason":"Unregistered","timestamp":1700000000000}'),
            (503, b'{"reason":"ServiceUnavailable"}'),
            (200, b""),
        ]
        for _ in range(3):
            yield client.push(_voip())
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        found = sorted(
            {
                type(o).__qualname__
                for o in gc.garbage
                if type(o).__module__.startswith("gateway") and id(o) not in before
            }
        )
        assert found == []
    finally:
        gc.garbage.clear()
        gc.set_debug(0)
        if was_enabled:
            gc.enable()
