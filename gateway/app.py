"""Assembles the gateway's services from a validated config: the one place."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import (
    IReactorCore,
    IReactorFromThreads,
    IReactorUDP,
)
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory

from gateway import __version__
from gateway.apns import ApnsClient, ApnsSettings, CertificateAuth, TokenAuth
from gateway.calls.dispatcher import Dispatcher, DispatcherSettings
from gateway.config import ApnsConfig, Config, parse_proxy
from gateway.devfiles import prepare_dev_files, read_jwt_secret
from gateway.directory import RegistryDirectory
from gateway.gcpolicy import GcPolicy
from gateway.http2 import H2Agent, H2AgentReactor
from gateway.listeners import (
    DatagramListener,
    Listener,
    StreamListener,
    tcp_endpoint,
)
from gateway.localpush.hub import Hub
from gateway.localpush.server import LocalPushFactory, tls_factory
from gateway.localpush.service import LocalPushService
from gateway.localpush.session import SessionSettings
from gateway.localpush.tls import ServerTLS
from gateway.messages import Messenger
from gateway.sip import TimerSettings, TransactionLayer, Transport
from gateway.sipserver.application import SipApplication, SipSettings
from gateway.sipserver.overload import LagMonitor, OverloadGuard, OverloadSettings
from gateway.sipserver.server import SipServer, SipStreamFactory, SipUdpProtocol
from gateway.sipserver.service import SipService
from gateway.store import DeviceStore, Registry, SQLitePersister

__all__ = ["Gateway", "GatewayReactor", "build_service"]

# Longest a stop waits for APNs pushes in flight.
SHUTDOWN_GRACE_S = 10.0


class GatewayReactor(H2AgentReactor, IReactorFromThreads, IReactorCore, IReactorUDP):
    """The reactor features the gateway's services need (sygnal's pattern)."""


class Gateway(MultiService):
    """The top service; holds the parts others (API, SIP, tests) reach for."""

    log = Logger()

    def __init__(self, config: Config, reactor: GatewayReactor) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.config = config
        self.reactor = reactor
        self.registry: Registry | None = None
        self.hub: Hub | None = None
        self.apns: ApnsClient | None = None
        self.dispatcher: Dispatcher | None = None
        self.messenger: Messenger | None = None
        self.listeners: dict[str, Listener] = {}
        self.sip: SipServer | None = None
        self.gc: GcPolicy | None = None
        # What SIGHUP re-reads, by what it is; each reads its files again.
        self.reloaders: dict[str, Callable[[], None]] = {}
        self.handle_sighup = False  # set by the twistd plugin, not by tests

    def reload(self) -> dict[str, str]:
        """Re-read certificates, credentials, secrets and keys; sessions stay.

        A file that fails to load leaves the old value in place and is
        reported; the others still reload.
        """
        results: dict[str, str] = {}
        for what, reload in self.reloaders.items():
            try:
                reload()
            except Exception as e:  # noqa: BLE001 - keep the old value, report
                results[what] = f"failed: {e}"
                self.log.error(
                    "Reload of {what} failed, keeping the old one: {error}",
                    what=what,
                    error=str(e),
                )
            else:
                results[what] = "reloaded"
                self.log.info("Reloaded {what}", what=what)
        return results

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        # twistd starts services before the reactor runs; ready means running.
        self.reactor.callWhenRunning(self._ready)
        if self.handle_sighup:
            signal.signal(signal.SIGHUP, self._sighup)

    def _sighup(self, signum: int, frame: object) -> None:
        self.reactor.callFromThread(self.reload)

    def _ready(self) -> None:
        self.log.info(
            "voipgw {version} ready (config {config})",
            version=__version__,
            config=str(self.config.path),
        )


class _Closing(Service):
    """Runs ``close`` on stop (clients with connections to drain)."""

    def __init__(self, close: Any) -> None:
        self._close = close

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        result: Deferred[None] = self._close()
        return result


def attach(service: IService, name: str, parent: MultiService) -> None:
    """Name a child service and add it; Twisted's service API is untyped."""
    service.setName(name)  # type: ignore[no-untyped-call]
    service.setServiceParent(parent)  # type: ignore[no-untyped-call]


def build_service(config: Config, reactor: GatewayReactor) -> Gateway:
    """The gateway as one MultiService: children start in this order and stop
    in reverse (API and SIP first, the registry's last writes at the end)."""
    prepare_dev_files(config)
    top = Gateway(config, reactor)
    registry = Registry(
        SQLitePersister(config.store.path, reactor),
        reactor,
        config.store.purge_interval_s,
    )
    top.registry = registry
    attach(registry, "registry", top)

    top.apns = _apns(config.apns, reactor, registry, top)
    hub = Hub(reactor, RegistryDirectory(registry))
    top.hub = hub
    top.dispatcher = Dispatcher(
        reactor,
        registry,
        hub,
        top.apns,
        DispatcherSettings(
            ring_timeout_s=config.calls.ring_timeout_s,
            ack_timeout_s=config.localpush.ack_timeout_s,
            resume_window_s=config.calls.resume_window_s,
            decline_policy=config.calls.decline_policy,
            callee_push_limit=config.calls.callee_push_limit,
            callee_push_window_s=config.calls.callee_push_window_s,
            caller_push_limit=config.calls.caller_push_limit,
            caller_push_window_s=config.calls.caller_push_window_s,
            bundle_id=config.apns.bundle_id,
        ),
    )
    hub.add_listener(top.dispatcher)
    top.messenger = Messenger(
        reactor,
        registry,
        hub,
        top.apns,
        ttl_s=config.localpush.message_ttl_s,
        ack_timeout_s=config.localpush.ack_timeout_s,
        bundle_id=config.apns.bundle_id,
    )
    dispatcher = top.dispatcher
    attach(_Closing(lambda: _stop_dispatcher(dispatcher)), "calls", top)
    if config.localpush.enabled:
        attach(_localpush(config, reactor, hub, top), "localpush", top)
    attach(_sip(config, reactor, top), "sip", top)
    # -- control API (gateway/api) --
    if config.api.enabled:
        from gateway.api import make_api_service

        attach(make_api_service(top), "api", top)
    # -- end control API --
    # Last, so that its start-up freeze finds everything above built.
    top.gc = GcPolicy(reactor, config.gc)
    attach(top.gc, "gc", top)
    return top


def _stop_dispatcher(dispatcher: Dispatcher) -> Deferred[None]:
    dispatcher.stop()
    return succeed(None)


def _localpush(
    config: Config, reactor: GatewayReactor, hub: Hub, top: Gateway
) -> LocalPushService:
    lp = config.localpush
    assert lp.jwt_secret_file is not None  # required by config validation
    settings = SessionSettings(
        max_frame=lp.max_frame,
        heartbeat_s=lp.heartbeat_s,
        ack_timeout_s=lp.ack_timeout_s,
        handshake_timeout_s=lp.handshake_timeout_s,
        rate_per_s=lp.rate_per_s,
        rate_burst=lp.rate_burst,
        send_buffer_limit=lp.send_buffer_max_bytes,
    )
    factory = LocalPushFactory(
        settings=settings,
        secret=read_jwt_secret(lp.jwt_secret_file),
        hub=hub,
        clock=reactor,
    )
    secret_file = lp.jwt_secret_file
    top.reloaders["device JWT secret"] = lambda: factory.set_secret(
        read_jwt_secret(secret_file)
    )
    service = LocalPushService(hub, lp.shutdown_window_s)
    if lp.transport == "tls":
        assert lp.cert is not None and lp.key is not None
        tls = ServerTLS(lp.cert, lp.key)
        top.reloaders["local push TLS certificate"] = tls.reload
        wrapped: Any = tls_factory(factory, tls)
    else:
        wrapped = factory
    listener = StreamListener(
        f"local push ({lp.transport})", tcp_endpoint(reactor, lp.bind, lp.port), wrapped
    )
    top.listeners["localpush"] = listener
    attach(listener, "listener", service)
    return service


def _sip(config: Config, reactor: GatewayReactor, top: Gateway) -> SipService:
    sip = config.sip
    layer = TransactionLayer(
        TimerSettings(t1=sip.t1_ms / 1000, t2=sip.t2_ms / 1000, t4=sip.t4_ms / 1000)
    )
    server = SipServer(reactor, layer, sip.max_message_bytes)
    overload = OverloadGuard(
        OverloadSettings(
            max_pending_invites=sip.max_pending_invites,
            lag_ms=sip.overload_lag_ms,
            retry_after_s=sip.overload_retry_after_s,
        )
    )
    assert top.dispatcher is not None and top.messenger is not None
    assert top.registry is not None
    app = SipApplication(
        reactor,
        dispatcher=top.dispatcher,
        messenger=top.messenger,
        registry=top.registry,
        settings=SipSettings(
            max_message_body_bytes=sip.max_message_body_bytes,
            custom_headers_max_bytes=config.calls.custom_headers_max_bytes,
            register_networks=sip.register_networks,
            user_agent=sip.user_agent,
        ),
        responder=server,
        overload=overload,
    )
    server.app = app
    top.sip = server
    service = SipService(server, app, LagMonitor(reactor, overload))
    if sip.udp.enabled:
        udp = SipUdpProtocol(server)
        server.udp = udp
        on_delay = overload.queued if overload.watches_lag else None
        listener: Listener = DatagramListener(
            "SIP UDP", reactor, sip.udp.bind, sip.udp.port, udp, on_delay=on_delay
        )
        top.listeners["sip-udp"] = listener
        attach(listener, "udp", service)
    streams = [
        ("tcp", Transport.TCP, sip.tcp.enabled, sip.tcp.bind, sip.tcp.port),
        ("tls", Transport.TLS, sip.tls.enabled, sip.tls.bind, sip.tls.port),
    ]
    for name, kind, enabled, bind, port in streams:
        if not enabled:
            continue
        factory: Any = SipStreamFactory(
            server,
            kind,
            reactor,
            idle_timeout_s=sip.tcp_idle_timeout_s,
            max_connections=sip.tcp_max_connections,
            message_timeout_s=sip.tcp_message_timeout_s,
        )
        if kind is Transport.TLS:
            assert sip.tls.cert is not None and sip.tls.key is not None
            tls = ServerTLS(sip.tls.cert, sip.tls.key)
            top.reloaders["SIP TLS certificate"] = tls.reload
            factory = TLSMemoryBIOFactory(tls, False, factory)
        listener = StreamListener(
            f"SIP {name.upper()}", tcp_endpoint(reactor, bind, port), factory
        )
        top.listeners[f"sip-{name}"] = listener
        attach(listener, name, service)
    return service


def _apns_credentials(
    apns: ApnsConfig, reactor: GatewayReactor
) -> tuple[TokenAuth | CertificateAuth, H2Agent]:
    """Read the credential files and build the agent that goes with them
    (certificate auth presents the certificate on the TLS connection)."""
    auth: TokenAuth | CertificateAuth
    client_certificate = None
    if apns.auth == "token":
        assert apns.key_file is not None
        auth = TokenAuth.from_p8(
            reactor,
            apns.key_file.read_bytes(),
            key_id=apns.key_id,
            team_id=apns.team_id,
            refresh_after_s=apns.token_refresh_s,
        )
    else:
        assert apns.cert_file is not None and apns.cert_key_file is not None
        auth = CertificateAuth(
            apns.cert_file.read_bytes(), apns.cert_key_file.read_bytes()
        )
        client_certificate = auth.private_certificate()
    agent = H2Agent(
        reactor,
        ca_file=apns.ca_file,
        client_certificate=client_certificate,
        proxy=parse_proxy(apns.proxy) if apns.proxy else None,
        # ApnsClient times each attempt itself (request_timeout_s, capped by
        # the push's deadline); a second timer per stream would only cost.
        request_timeout=None,
        max_queued=apns.max_queued,
    )
    return auth, agent


def _apns(
    apns: ApnsConfig, reactor: GatewayReactor, registry: DeviceStore, top: Gateway
) -> ApnsClient | None:
    """The APNs client, or None when ``apns.auth = "disabled"``."""
    if apns.auth == "disabled":
        return None
    auth, agent = _apns_credentials(apns, reactor)
    agents = [agent]
    client = ApnsClient(
        reactor,
        agent,
        auth,
        ApnsSettings(
            production_host=apns.production_host,
            production_port=apns.production_port,
            sandbox_host=apns.sandbox_host,
            sandbox_port=apns.sandbox_port,
            max_in_flight=apns.max_in_flight,
            max_queued=apns.max_queued,
            request_timeout_s=apns.request_timeout_s,
            expiration_s=apns.expiration_s,
            jwt_refresh_after_s=apns.token_refresh_s,
        ),
        on_token_rejected=lambda token, reason: _forget_token(registry, token),
    )

    def reload() -> None:
        new_auth, new_agent = _apns_credentials(apns, reactor)
        if isinstance(new_auth, TokenAuth):
            # The connection carries no credential: keep it, swap the signer.
            new_agent.close()
            client.replace_credentials(new_auth)
            return
        client.replace_credentials(new_auth, new_agent)
        old = agents[-1]
        agents.append(new_agent)
        # Let pushes in flight on the old connection finish first; a stop
        # before then closes it with the others.
        reactor.callLater(apns.request_timeout_s + 1, old.close)

    top.reloaders["APNs credentials"] = reload

    def close() -> Deferred[Any]:
        # Pushes in flight get up to the request timeout to finish, then the
        # connections close.
        d = client.close(grace_s=min(apns.request_timeout_s, SHUTDOWN_GRACE_S))
        d.addBoth(
            lambda _: gatherResults([a.close() for a in agents], consumeErrors=True)
        )
        return d

    attach(_Closing(close), "apns", top)
    return client


def _forget_token(registry: DeviceStore, token: str) -> None:
    registry.remove_token(token).addErrback(
        lambda f: Logger().failure("Removing a rejected token failed", f)
    )
