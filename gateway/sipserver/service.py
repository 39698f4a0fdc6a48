"""The SIP listeners as one service, with the graceful stop issue 7 asks for."""

from __future__ import annotations

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred

from gateway.sipserver.application import SipApplication
from gateway.sipserver.overload import LagMonitor
from gateway.sipserver.server import SipServer

__all__ = ["SipService"]

RETRY_AFTER_S = 5


class SipService(MultiService):
    """On stop: pending INVITEs get 503 + Retry-After, then the ports close.
    While running, the reactor's lateness feeds the overload guard."""

    def __init__(
        self, server: SipServer, app: SipApplication, lag: LagMonitor | None = None
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.server = server
        self.app = app
        self.lag = lag

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        if self.lag is not None:
            self.lag.start()

    def stopService(self) -> Deferred[None]:
        if self.lag is not None:
            self.lag.stop()
        self.app.shutdown(RETRY_AFTER_S)
        d: Deferred[None] = super().stopService()  # type: ignore[no-untyped-call]
        d.addBoth(self._stopped)
        return d

    def _stopped(self, result: object) -> object:
        self.server.stop()
        return result
