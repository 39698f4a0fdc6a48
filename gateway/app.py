"""Assembles the gateway's services from a validated config: the one place."""

from __future__ import annotations

from twisted.application.service import IService, MultiService
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from zope.interface import Interface

from gateway.config import Config
from gateway.devfiles import prepare_dev_files
from gateway.store import Registry, SQLitePersister

__all__ = ["GatewayReactor", "build_service"]


class GatewayReactor(IReactorTime, IReactorFromThreads, Interface):
    """The reactor features the gateway's services need (sygnal's pattern)."""


def attach(service: IService, name: str, parent: MultiService) -> None:
    """Name a child service and add it; Twisted's service API is untyped."""
    service.setName(name)  # type: ignore[no-untyped-call]
    service.setServiceParent(parent)  # type: ignore[no-untyped-call]


def build_service(config: Config, reactor: GatewayReactor) -> MultiService:
    """The gateway as one MultiService; children start in order, stop reversed."""
    prepare_dev_files(config)
    top = MultiService()  # type: ignore[no-untyped-call]
    registry = Registry(
        SQLitePersister(config.store.path, reactor),
        reactor,
        config.store.purge_interval_s,
    )
    attach(registry, "registry", top)
    return top
