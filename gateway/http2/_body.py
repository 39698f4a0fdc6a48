"""A request body that is already bytes.

treq turns ``data=``/``json=`` into a ``FileBodyProducer`` that feeds itself
through the global cooperator, which costs more than the HTTP/2 stream itself
at thousands of pushes per second. Give ``treq.client.HTTPClient`` this class as
``data_to_body_producer`` and the agent takes the bytes directly.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IConsumer
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

__all__ = ["BytesProducer"]


@implementer(IBodyProducer)
class BytesProducer:
    """``IBodyProducer`` over bytes in memory (also usable with any agent)."""

    def __init__(self, body: bytes) -> None:
        self.body = bytes(body)
        self.length = len(self.body)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        """Write everything at once."""
        consumer.write(self.body)
        return succeed(None)

    def pauseProducing(self) -> None:
        """Nothing to pause: the body is written in one call."""

    def resumeProducing(self) -> None:
        """Nothing to resume."""

    def stopProducing(self) -> None:
        """Nothing to stop."""
