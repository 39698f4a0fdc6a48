"""H2Agent against real HTTP/2 TLS servers on 127.0.0.1 (Twisted Site and a fake)."""

from __future__ import annotations

import json
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from h2_fake_servers import CountingSite, Echo, tls_options
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from gateway.http2 import H2Agent

pytestmark = pytest.mark.integration


def listen(
    factory: Any, tls_pair: tuple[Path, Path], protocols: list[bytes] | None = None
) -> Any:
    cert, key = tls_pair
    return reactor.listenSSL(
        0, factory, tls_options(cert, key, protocols), interface="127.0.0.1"
    )


@pytest.fixture
def cleanup() -> Generator[list[Any], None, None]:
    """Things with close()/stopListening() to shut down after the test."""
    items: list[Any] = []
    yield items


def make_agent(tls_pair: tuple[Path, Path], **kw: Any) -> H2Agent:
    kw.setdefault("ping_interval", None)
    return H2Agent(reactor, ca_file=tls_pair[0], **kw)


@pytest_twisted.inlineCallbacks
def test_post_json_with_headers(
    tls_pair: tuple[Path, Path],
) -> Generator[Deferred[Any], Any, None]:
    """treq.HTTPClient(H2Agent) POSTs JSON with headers and gets 200, headers and body over h2."""
    echo = Echo()
    site = CountingSite(echo)
    port = listen(site, tls_pair)
    agent = make_agent(tls_pair)
    try:
        client = HTTPClient(agent)
        url = f"https://127.0.0.1:{port.getHost().port}/3/device/abc"
        resp = yield client.post(
            url,
            json={"aps": {}},
            headers={"apns-push-type": "voip", "Apns-Topic": "a.b.voip"},
        )
        assert resp.code == 200
        assert resp.headers.getRawHeaders(b"apns-id") == [b"abc-123"]
        body = yield treq.json_content(resp)
        assert body["proto"] == "HTTP/2"
        assert body["method"] == "POST"
        assert body["path"] == "/3/device/abc"
        assert json.loads(body["body"]) == {"aps": {}}
        assert body["headers"]["apns-push-type"] == ["voip"]
        assert body["headers"]["apns-topic"] == ["a.b.voip"]
        assert body["headers"]["content-length"] == [str(len(body["body"]))]
    finally:
        yield agent.close()
        yield port.stopListening()
