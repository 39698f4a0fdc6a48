"""Assembles the gateway's services from a validated config: the one place."""

from __future__ import annotations

from twisted.application.service import IService, MultiService
from twisted.internet.interfaces import IReactorCore, IReactorFromThreads, IReactorTime
from twisted.logger import Logger
from zope.interface import Interface

from gateway import __version__
from gateway.config import Config
from gateway.devfiles import prepare_dev_files
from gateway.store import Registry, SQLitePersister

__all__ = ["Gateway", "GatewayReactor", "build_service"]


class GatewayReactor(IReactorTime, IReactorFromThreads, IReactorCore, Interface):
    """The reactor features the gateway's services need (sygnal's pattern)."""


class Gateway(MultiService):
    """The top service; says when it is ready, which twistd itself does not."""

    log = Logger()

    def __init__(self, config: Config, reactor: GatewayReactor) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.config = config
        self._reactor = reactor

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        # twistd starts services before the reactor runs; ready means running.
        self._reactor.callWhenRunning(self._ready)

    def _ready(self) -> None:
        self.log.info(
            "voipgw {version} ready (config {config})",
            version=__version__,
            config=str(self.config.path),
        )


def attach(service: IService, name: str, parent: MultiService) -> None:
    """Name a child service and add it; Twisted's service API is untyped."""
    service.setName(name)  # type: ignore[no-untyped-call]
    service.setServiceParent(parent)  # type: ignore[no-untyped-call]


def build_service(config: Config, reactor: GatewayReactor) -> Gateway:
    """The gateway as one MultiService; children start in order, stop reversed."""
    prepare_dev_files(config)
    top = Gateway(config, reactor)
    registry = Registry(
        SQLitePersister(config.store.path, reactor),
        reactor,
        config.store.purge_interval_s,
    )
    attach(registry, "registry", top)
    return top
