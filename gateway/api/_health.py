"""Liveness and readiness, for load balancers and orchestrators.

``/healthz`` says the process answers. ``/readyz`` says it can do its job:
every listener is bound, the store is loaded and its directory writable,
and APNs answers a TCP connect (or APNs is not configured). The APNs probe
is cached, so a balancer polling every second costs one connect a period.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.protocol import Factory, Protocol

from gateway.config import parse_proxy

if TYPE_CHECKING:
    from gateway.app import Gateway

__all__ = ["ApnsProbe", "Check", "readiness"]


@attrs.frozen
class Check:
    """One readiness check's result."""

    ok: bool
    detail: str


class ApnsProbe:
    """A cached TCP reachability probe of the APNs host (or the proxy)."""

    def __init__(
        self,
        reactor: Any,
        host: str,
        port: int,
        *,
        ttl_s: float = 30.0,
        timeout_s: float = 5.0,
    ) -> None:
        self._reactor = reactor
        self.host = host
        self.port = port
        self._ttl_s = ttl_s
        self._timeout_s = timeout_s
        self._last: tuple[float, Check] | None = None
        self._waiters: list[Deferred[Check]] = []

    def check(self) -> Deferred[Check]:
        """The cached result if fresh, else a new probe (shared by callers)."""
        now = self._reactor.seconds()
        if self._last is not None and now - self._last[0] < self._ttl_s:
            return succeed(self._last[1])
        waiter: Deferred[Check] = Deferred()
        self._waiters.append(waiter)
        if len(self._waiters) == 1:
            self._probe().addCallback(self._done)
        return waiter

    def _probe(self) -> Deferred[Check]:
        where = f"{self.host}:{self.port}"
        endpoint = HostnameEndpoint(
            self._reactor, self.host, self.port, timeout=self._timeout_s
        )
        d: Deferred[Any] = endpoint.connect(Factory.forProtocol(Protocol))

        def up(protocol: Protocol) -> Check:
            if protocol.transport is not None:
                protocol.transport.loseConnection()
            return Check(True, f"{where} reachable")

        def down(failure: Any) -> Check:
            return Check(False, f"{where} unreachable: {failure.getErrorMessage()}")

        return d.addCallbacks(up, down)

    def _done(self, check: Check) -> None:
        self._last = (self._reactor.seconds(), check)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(check)


def apns_probe(gateway: Gateway) -> ApnsProbe | None:
    """The probe for the gateway's APNs settings; None if APNs is disabled."""
    apns = gateway.config.apns
    if apns.auth == "disabled":
        return None
    if apns.proxy:
        host, port = parse_proxy(apns.proxy)
    else:
        host, port = apns.production_host, apns.production_port
    return ApnsProbe(gateway.reactor, host, port)


def readiness(gateway: Gateway, probe: ApnsProbe | None) -> Deferred[dict[str, Check]]:
    """Every check, by name; ready when all are ok."""
    checks = {"listeners": _listeners(gateway), "store": _store(gateway)}
    if probe is None:
        checks["apns"] = Check(True, "not configured")
        return succeed(checks)

    def apns(check: Check) -> dict[str, Check]:
        checks["apns"] = check
        return checks

    return probe.check().addCallback(apns)


def _listeners(gateway: Gateway) -> Check:
    down = [name for name, lst in gateway.listeners.items() if lst.address is None]
    if down:
        return Check(False, "not listening: " + ", ".join(sorted(down)))
    bound = [
        f"{name} {lst.address[0]}:{lst.address[1]}"
        for name, lst in sorted(gateway.listeners.items())
        if lst.address is not None
    ]
    return Check(True, ", ".join(bound) or "none configured")


def _store(gateway: Gateway) -> Check:
    registry = gateway.registry
    if registry is None or not registry.loaded:
        return Check(False, "registry not loaded")
    path = gateway.config.store.path
    directory = path.parent
    if not os.access(directory, os.W_OK):
        return Check(False, f"{directory} is not writable")
    if path.exists() and not os.access(path, os.W_OK):
        return Check(False, f"{path} is not writable")
    return Check(True, f"{path} writable")
