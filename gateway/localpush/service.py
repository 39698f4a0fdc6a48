"""The device socket service: listener plus hub, with a graceful stop."""

from __future__ import annotations

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from gateway.localpush.hub import Hub

__all__ = ["LocalPushService"]


class LocalPushService(MultiService):
    """Stops accepting first, then sends every session ``goaway shutdown``
    with reconnects spread over ``shutdown_window_s`` (localpush.md)."""

    log = Logger()

    def __init__(self, hub: Hub, shutdown_window_s: float) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.hub = hub
        self.shutdown_window_s = shutdown_window_s

    async def _stop(self) -> None:
        await super().stopService()  # type: ignore[no-untyped-call]
        count = self.hub.online_count
        self.log.info("Closing {count} device sessions", count=count)
        await self.hub.shutdown(self.shutdown_window_s)

    def stopService(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._stop())
