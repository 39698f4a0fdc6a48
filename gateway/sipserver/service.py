"""The SIP listeners as one service, with the graceful stop issue 7 asks for."""

from __future__ import annotations

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred

from gateway.sipserver.application import SipApplication
from gateway.sipserver.server import SipServer

__all__ = ["SipService"]

RETRY_AFTER_S = 5


class SipService(MultiService):
    """On stop: pending INVITEs get 503 + Retry-After, then the ports close."""

    def __init__(self, server: SipServer, app: SipApplication) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.server = server
        self.app = app

    def stopService(self) -> Deferred[None]:
        self.app.shutdown(RETRY_AFTER_S)
        d: Deferred[None] = super().stopService()  # type: ignore[no-untyped-call]
        d.addBoth(self._stopped)
        return d

    def _stopped(self, result: object) -> object:
        self.server.stop()
        return result
