"""A minimal LPP/1 device over real sockets, for end-to-end tests."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, protocol

from gateway.localpush.codec import FrameDecoder


class Device(protocol.Protocol):
    """A minimal LPP/1 client: queues frames, lets the test wait for them."""

    def __init__(self) -> None:
        self.decoder = FrameDecoder(1 << 20)
        self.frames: list[dict[str, Any]] = []
        self.waiting: list[defer.Deferred[dict[str, Any]]] = []
        self.lost: defer.Deferred[None] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        for frame in self.decoder.feed(data):
            self.frames.append(dict(frame.body))
        while self.frames and self.waiting:
            self.waiting.pop(0).callback(self.frames.pop(0))

    def next_frame(self) -> defer.Deferred[dict[str, Any]]:
        d: defer.Deferred[dict[str, Any]] = defer.Deferred()
        if self.frames:
            d.callback(self.frames.pop(0))
        else:
            self.waiting.append(d)
        return d.addTimeout(5, self._reactor())

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)

    @staticmethod
    def _reactor() -> Any:
        from twisted.internet import reactor

        return reactor
