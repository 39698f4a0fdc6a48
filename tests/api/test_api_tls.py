"""api.tls: the control API over HTTPS with the configured certificate."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted
from api_helpers import Client, base_url, make_gateway
from twisted.internet import reactor
from twisted.internet.ssl import Certificate
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS

pytestmark = pytest.mark.integration


@pytest_twisted.ensureDeferred
async def test_api_over_tls(tmp_path: Path) -> None:
    """With api.tls the listener speaks HTTPS (dev certificate for
    localhost/127.0.0.1) and the API works over it."""
    gateway = make_gateway(
        tmp_path,
        env={
            "VOIPGW_API__TLS": "true",
            "VOIPGW_API__CERT": "../var/dev-tls-cert.pem",
            "VOIPGW_API__KEY": "../var/dev-tls-key.pem",
        },
    )
    gateway.startService()
    try:
        cert = gateway.config.api.cert
        assert cert is not None
        policy = BrowserLikePolicyForHTTPS(
            trustRoot=Certificate.loadPEM(cert.read_bytes())
        )
        agent = Agent(reactor, contextFactory=policy)
        client = Client(base_url(gateway, "https"), agent=agent)
        assert (await client.get("/healthz")).status == 200
        put = await client.put("/v1/devices/tls-1", {"aors": ["sip:t@example.com"]})
        assert put.status == 201
        assert gateway.listeners["api"].label == "control API (https)"  # type: ignore[attr-defined]
    finally:
        await gateway.stopService()
