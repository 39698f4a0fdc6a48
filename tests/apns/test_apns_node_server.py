"""ApnsClient against another HTTP/2 stack: bench/apns_server.mjs (Node.js,
nghttp2 inside), which answers as APNs does.

Its encoder sends every echoed ``apns-id`` as a Huffman-coded literal that
enters the dynamic table and evicts older ones, the representation
``FastDecoder`` reads itself; each push's outcome must carry its own id
back, across concurrent and sequential pushes. Skipped where ``node`` is not
installed (Debian ``nodejs``).
"""

from __future__ import annotations

import shutil
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from cryptography.hazmat.primitives.asymmetric import ec
from gw_servers import free_port, server_process
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults

from gateway.apns import (
    ApnsClient,
    ApnsSettings,
    Delivered,
    Environment,
    TokenAuth,
    voip_notification,
)
from gateway.http2 import BytesProducer, H2Agent

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("node") is None, reason="needs node"),
]

SERVER = Path(__file__).resolve().parents[2] / "bench" / "apns_server.mjs"
TOKEN = "0123456789abcdef" * 4


@pytest.fixture
def node_apns(tls_pair: tuple[Path, Path]) -> Iterator[int]:
    """The node server on 127.0.0.1; its port."""
    cert, key = tls_pair
    port = free_port()
    with server_process(["node", str(SERVER), str(port), str(key), str(cert)], port):
        yield port  # the server also exits when its stdin pipe closes


@pytest_twisted.inlineCallbacks
def test_every_push_gets_its_own_apns_id_back(
    node_apns: int, tls_pair: tuple[Path, Path]
) -> Generator[Deferred[Any], Any, None]:
    """60 pushes (50 at once, then 10 one by one) end Delivered, each with the
    apns-id it sent, decoded from nghttp2's Huffman-coded literals."""
    agent = H2Agent(reactor, ca_file=tls_pair[0], ping_interval=None)
    auth = TokenAuth(
        reactor,  # type: ignore[arg-type]
        ec.generate_private_key(ec.SECP256R1()),
        key_id="ABC123DEFG",
        team_id="DEF123GHIJ",
    )
    client = ApnsClient(
        reactor,  # type: ignore[arg-type]
        agent,
        auth,
        ApnsSettings(
            production_host="127.0.0.1",
            production_port=node_apns,
            request_timeout_s=5.0,
        ),
    )

    def push() -> tuple[str, Deferred[Any]]:
        n = voip_notification(
            device_token=TOKEN,
            environment=Environment.PRODUCTION,
            bundle_id="com.example.phone",
            payload=b'{"aps":{}}',
            deadline=reactor.seconds() + 10,  # type: ignore[attr-defined]
        )
        return n.apns_id, client.push(n)

    try:
        sent = [push() for _ in range(50)]
        outcomes = yield gatherResults([d for _, d in sent])
        for _ in range(10):
            apns_id, d = push()
            sent.append((apns_id, d))
            outcomes.append((yield d))
        assert all(isinstance(o, Delivered) for o in outcomes)
        assert [o.apns_id for o in outcomes] == [apns_id for apns_id, _ in sent]
        assert len({o.apns_id for o in outcomes}) == 60
        assert agent.connection_count("127.0.0.1", node_apns) == 1
    finally:
        yield client.close()
        yield agent.close()


@pytest_twisted.inlineCallbacks
def test_the_response_headers_carry_the_echoed_ids(
    node_apns: int, tls_pair: tuple[Path, Path]
) -> Generator[Deferred[Any], Any, None]:
    """Read through treq directly (ApnsClient would fall back to its own id if
    the response's were unreadable): each response names its request's id."""
    agent = H2Agent(reactor, ca_file=tls_pair[0], ping_interval=None)
    http = HTTPClient(agent, data_to_body_producer=BytesProducer)
    url = f"https://127.0.0.1:{node_apns}/3/device/{TOKEN}"
    ids = [f"2f1e3e1c-7b7c-4d8e-9b7a-{i:012x}" for i in range(40)]

    def post(apns_id: str) -> Deferred[Any]:
        d = http.post(url, data=b"{}", headers={"apns-id": apns_id})
        return d.addCallback(lambda r: (r.code, r.headers.getRawHeaders(b"apns-id")))

    try:
        got = yield gatherResults([post(i) for i in ids[:30]])
        for apns_id in ids[30:]:
            got.append((yield post(apns_id)))
        assert got == [(200, [apns_id.encode()]) for apns_id in ids]
    finally:
        yield agent.close()
