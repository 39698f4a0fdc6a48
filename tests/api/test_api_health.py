"""/healthz and /readyz, and the APNs reachability probe."""

from __future__ import annotations

import pytest
import pytest_twisted
from api_helpers import Client
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol

from gateway.api import ApnsProbe
from gateway.app import Gateway

pytestmark = pytest.mark.integration


@pytest_twisted.ensureDeferred
async def test_healthz(client: Client) -> None:
    """The process answers."""
    answer = await client.get("/healthz", key=None)
    assert (answer.status, answer.body) == (200, {"status": "ok"})


@pytest_twisted.ensureDeferred
async def test_readyz_ready_with_every_check(gateway: Gateway, client: Client) -> None:
    """Listeners bound, store writable, APNs not configured: 200."""
    answer = await client.get("/readyz", key=None)
    assert answer.status == 200
    assert answer.body["ready"] is True
    checks = answer.body["checks"]
    assert set(checks) == {"listeners", "store", "apns"}
    assert checks["apns"] == {"ok": True, "detail": "not configured"}
    assert "api 127.0.0.1:" in checks["listeners"]["detail"]
    assert checks["store"]["ok"] is True


@pytest_twisted.ensureDeferred
async def test_readyz_503_when_a_listener_is_down(
    gateway: Gateway, client: Client
) -> None:
    """A listener that stopped listening makes the gateway not ready."""
    await gateway.listeners["localpush"].stopService()
    answer = await client.get("/readyz", key=None)
    assert answer.status == 503
    assert answer.body["ready"] is False
    assert answer.body["checks"]["listeners"] == {
        "ok": False,
        "detail": "not listening: localpush",
    }


@pytest_twisted.ensureDeferred
async def test_apns_probe_reachable_cached_and_unreachable() -> None:
    """A TCP connect decides; a fresh result is reused without a new connect;
    a closed port is reported unreachable."""
    accepted: list[Protocol] = []

    class Count(Protocol):
        def connectionMade(self) -> None:
            accepted.append(self)

    port = reactor.listenTCP(0, Factory.forProtocol(Count), interface="127.0.0.1")
    number = port.getHost().port
    try:
        probe = ApnsProbe(reactor, "127.0.0.1", number, ttl_s=60)
        first = await probe.check()
        second = await probe.check()
        assert first.ok and first is second
        assert first.detail == f"127.0.0.1:{number} reachable"
    finally:
        await port.stopListening()
    closed = ApnsProbe(reactor, "127.0.0.1", number, timeout_s=2)
    result = await closed.check()
    assert not result.ok
    assert result.detail.startswith(f"127.0.0.1:{number} unreachable")
