"""``IResponse`` for HTTP/2 streams, shaped so treq's helpers work unchanged.

The body may arrive before anyone calls ``deliverBody`` (the stream does not
wait), so it is buffered here; the connection caps its size.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from twisted.internet.interfaces import IProtocol, IPushProducer
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import RESPONSES
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IClientRequest, IResponse
from zope.interface import implementer

__all__ = ["H2ClientRequest", "H2Response"]


@implementer(IClientRequest)
class H2ClientRequest:
    """What was asked, for ``IResponse.request``.

    It lives as long as the stream, so it keeps the header fields as sent
    (the exchange's list, which exists anyway) and builds ``Headers`` only
    when asked: a ``Headers`` per request in flight is a dict and a list per
    field more for the cycle collector to walk.
    """

    def __init__(
        self, method: bytes, absoluteURI: bytes, fields: list[tuple[bytes, bytes]]
    ) -> None:
        self.method = method
        self.absoluteURI = absoluteURI
        self._fields = fields

    @property
    def headers(self) -> Headers:
        """The request's header fields as sent, without pseudo-headers."""
        headers = Headers()
        for name, value in self._fields:
            if not name.startswith(b":"):
                headers.addRawHeader(name, value)
        return headers


@implementer(IPushProducer)
class _BodyProducer:
    """Transport handed to the body protocol; stopping it aborts the stream."""

    def __init__(self, stop: Callable[[], None]) -> None:
        self._stop = stop

    def pauseProducing(self) -> None:
        """Nothing to pause: the body is already buffered and capped."""

    def resumeProducing(self) -> None:
        """Nothing to resume."""

    def stopProducing(self) -> None:
        """The consumer gave up: reset the stream."""
        self._stop()


@implementer(IResponse)
class H2Response:
    """One HTTP/2 response; body chunks are buffered until ``deliverBody``."""

    version = (b"HTTP", 2, 0)
    previousResponse: IResponse | None = None

    def __init__(
        self,
        code: int,
        headers: Headers,
        request: IClientRequest,
        stop: Callable[[], None],
    ) -> None:
        self.code = code
        self.phrase = RESPONSES.get(code, b"Unknown Status")
        self.headers = headers
        self.request = request
        self.length: int | object = UNKNOWN_LENGTH
        lengths = headers.getRawHeaders(b"content-length")
        if lengths:
            with contextlib.suppress(ValueError):
                self.length = int(lengths[0])
        self._stop = stop
        self._chunks: list[bytes] = []
        self._protocol: IProtocol | None = None
        self._end: Failure | None = None

    @property
    def finished(self) -> bool:
        """Whether the body has ended (well or badly)."""
        return self._end is not None

    def deliverBody(self, protocol: IProtocol) -> None:
        """Give buffered and future body bytes to ``protocol``, then its end."""
        if self._protocol is not None:
            raise RuntimeError("deliverBody called twice")
        self._protocol = protocol
        protocol.makeConnection(_BodyProducer(self._stop))  # type: ignore[arg-type]
        chunks, self._chunks = self._chunks, []
        for chunk in chunks:
            protocol.dataReceived(chunk)
        if self._end is not None:
            protocol.connectionLost(self._end)

    def setPreviousResponse(self, response: IResponse) -> None:
        """Redirect history; unused here but part of ``IResponse``."""
        self.previousResponse = response

    def data_received(self, data: bytes) -> None:
        """A body chunk from the stream."""
        if self._end is not None:
            return
        if self._protocol is None:
            self._chunks.append(data)
        else:
            self._protocol.dataReceived(data)

    def end(self, error: BaseException | None = None) -> None:
        """The stream ended: cleanly (``ResponseDone``) or with ``error``."""
        if self._end is not None:
            return
        self._end = Failure(error if error is not None else ResponseDone())  # type: ignore[no-untyped-call]
        if self._protocol is not None:
            self._protocol.connectionLost(self._end)
